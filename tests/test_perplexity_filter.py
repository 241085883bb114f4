"""The perplexity band on a real causal LM (the tests' tiny GSM8K model): in-domain text scores
lower than shuffled words, the band rejects with the right reasons, batching changes nothing."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import statistics
import time
from pathlib import Path

import pytest
import torch

from distillery.filter.perplexity import PerplexityConfig, PerplexityFilter
from distillery.records import new_record
from tests.helpers import GSM8K_TEST, read_jsonl


def rec(question: str, response: str) -> dict:
    return new_record(
        id="r",
        response=response,
        prompt=[{"role": "system", "content": "Solve it."}, {"role": "user", "content": question}],
    )


def shuffled(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a small shared CPU, torch's intra-op thread pool spins against other processes
    (measured 8x slower forward passes with 2 threads than with 1 under load); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[dict, dict]]:
    rows = read_jsonl(GSM8K_TEST, 16)
    return [(rec(r["question"], r["answer"]), rec(r["question"], shuffled(r["answer"], i))) for i, r in enumerate(rows)]


def test_in_domain_text_is_less_perplexing_than_shuffled_words(tiny_gsm8k_model: Path, pairs):
    stage = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), batch_size=8))
    real = stage.perplexities([p[0] for p in pairs])
    noise = stage.perplexities([p[1] for p in pairs])
    assert all(n > 0 for _, n in real)
    assert sum(r < s for (r, _), (s, _) in zip(real, noise, strict=True)) >= 0.9 * len(pairs)
    assert statistics.median(p for p, _ in noise) > 2 * statistics.median(p for p, _ in real)


def test_band_rejects_with_value_and_reason(tiny_gsm8k_model: Path, pairs):
    probe = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model)))
    real = [p for p, _ in probe.perplexities([p[0] for p in pairs])]
    noise = [p for p, _ in probe.perplexities([p[1] for p in pairs])]
    cut = statistics.median(real + noise)
    stage = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), max_perplexity=cut))
    records = [rec(p[0]["prompt"][-1]["content"], p[0]["response"]) for p in pairs]
    records += [rec(p[1]["prompt"][-1]["content"], p[1]["response"]) for p in pairs]
    stage.apply(records)
    for record, ppl in zip(records, real + noise, strict=True):
        detail = json.loads(record["verdicts"][-1]["detail"])
        assert detail["perplexity"] == pytest.approx(ppl, rel=1e-3)
        assert record["accepted"] == (ppl <= cut)
        if not record["accepted"]:
            m = re.fullmatch(r"too_perplexing: ([\d.]+) > ([\d.e+]+)", record["reject_reason"])
            assert m and float(m.group(1)) == pytest.approx(ppl, abs=0.06) and float(m.group(2)) == pytest.approx(cut, rel=1e-5)
    assert stage.stats.reasons["too_perplexing"] == sum(p > cut for p in real + noise) > 0
    low = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), min_perplexity=max(real) + 1))
    easy = [rec(p[0]["prompt"][-1]["content"], p[0]["response"]) for p in pairs[:3]]
    low.apply(easy)
    assert all(re.fullmatch(r"too_predictable: [\d.]+ < [\d.]+", r["reject_reason"]) for r in easy)


def test_empty_response_is_rejected(tiny_gsm8k_model: Path):
    stage = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), max_perplexity=1e6))
    record = rec("How many?", "")
    stage.apply([record])
    assert record["reject_reason"] == "empty_response: no response tokens to score"


def test_scores_exactly_the_response_tokens_after_the_chat_template(tiny_gsm8k_model: Path, pairs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = pairs[0][0]
    stage = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model)))
    ((ppl, n),) = stage.perplexities([record])
    tok = AutoTokenizer.from_pretrained(tiny_gsm8k_model)
    lm = AutoModelForCausalLM.from_pretrained(tiny_gsm8k_model).eval()
    prefix = tok.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    ctx = tok(prefix, add_special_tokens=False)["input_ids"]
    resp = tok(record["response"], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + resp])
    labels = ids.clone()
    labels[0, : len(ctx)] = -100
    with torch.no_grad():
        loss = lm(input_ids=ids, labels=labels).loss.item()  # mean NLL over the response tokens
    assert n == len(resp)
    assert ppl == pytest.approx(math.exp(loss), rel=1e-4)
    # without the prompt, the response is scored after BOS only: a different (higher) value
    alone = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), condition_on_prompt=False))
    ((ppl_alone, n_alone),) = alone.perplexities([record])
    assert n_alone == len(resp) and ppl_alone != pytest.approx(ppl, rel=1e-3)


def test_batching_and_padding_do_not_change_the_values(tiny_gsm8k_model: Path, pairs):
    records = [p[0] for p in pairs[:6]] + [p[1] for p in pairs[:6]]
    batched = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), batch_size=12)).perplexities(records)
    single = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), batch_size=1)).perplexities(records)
    for (a, na), (b, nb) in zip(batched, single, strict=True):
        assert na == nb and a == pytest.approx(b, rel=1e-4)


def test_long_sequences_are_truncated_to_max_length(tiny_gsm8k_model: Path, pairs):
    stage = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), max_length=24))
    ctx, resp = stage.pair(pairs[0][0])
    assert len(ctx) + len(resp) == 24 and len(ctx) >= 1
    ((ppl, n),) = stage.perplexities([pairs[0][0]])
    assert n == len(resp) == 23 and math.isfinite(ppl)


def test_async_apply_and_speed(tiny_gsm8k_model: Path):
    rows = read_jsonl(GSM8K_TEST, 64)
    stage = PerplexityFilter(PerplexityConfig(model=str(tiny_gsm8k_model), batch_size=16, max_perplexity=1e9))
    stage.apply([rec(rows[0]["question"], rows[0]["answer"])])  # load the model
    records = [rec(r["question"], r["answer"]) for r in rows]
    start = time.perf_counter()
    kept = asyncio.run(stage.apply_async(records))
    rate = len(records) / (time.perf_counter() - start)
    print(f"perplexity (tiny GSM8K model, CPU): {rate:.1f} texts/s")
    assert len(kept) == len(records)
    stage.close()
    assert stage._lm is None


def test_default_reference_model_is_the_builtin_teacher():
    assert PerplexityConfig().model == "builtin:teacher"
    with pytest.raises(ValueError, match="min_perplexity 5.0 > max_perplexity 2.0"):
        PerplexityConfig(min_perplexity=5, max_perplexity=2)
