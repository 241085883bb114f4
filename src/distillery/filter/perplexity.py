"""``filters: perplexity``: keep responses whose perplexity under a reference LM lies in a band.

Perplexity filtering with a reference language model is the CCNet recipe (Wenzek et al.,
2020) and a common quality signal for synthetic data: very high perplexity flags garbled
or off-distribution text, very low perplexity flags degenerate, repetitive or memorised
text.

What is scored, exactly: the record's chat ``messages`` (system, few-shot turns, the user
prompt) are rendered with the reference model's chat template with the generation prompt
appended (``add_generation_prompt=True``); that is the context. The response is tokenized
on its own (no special tokens) and appended, so the token boundary is the template's. Only
the response tokens are scored; the end-of-turn token is not. Perplexity is
``exp(mean over response tokens of -log p(token | everything before))`` (natural log).
Without a chat template the context is the messages' contents joined by blank lines; with
``condition_on_prompt: false`` the context is the tokenizer's BOS token alone (or nothing,
and then the first response token is not scored). Sequences longer than ``max_length``
lose context from the left first, then response tokens from the end; ``detail.tokens``
says how many tokens were scored.

Batches are sorted by length, right-padded with an attention mask, and run under
``torch.inference_mode``; log-probabilities are computed in float32.

Reasons: ``too_perplexing: 812.3 > 500``, ``too_predictable: 1.02 < 1.5``,
``empty_response: no response tokens to score``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from pydantic import Field, model_validator

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.registry import register


@register("filter")
class PerplexityConfig(StageConfig):
    """Recipe entry of the perplexity band.

    Attributes:
        model: reference causal LM: ``builtin:teacher`` (default), ``builtin:student``, a local
            folder (relative to the recipe) or a Hub name already in the local cache.
        min_perplexity, max_perplexity: the band; either may be omitted.
        condition_on_prompt: score the response given the chat-formatted prompt (default) or alone.
        batch_size: sequences per forward pass.
        max_length: most tokens per sequence (default: the model's ``max_position_embeddings``).
        device, dtype: as for the ``transformers`` teacher backend.
    """

    type: Literal["perplexity"] = "perplexity"
    model: str = "builtin:teacher"
    min_perplexity: float | None = Field(None, ge=1)
    max_perplexity: float | None = Field(None, ge=1)
    condition_on_prompt: bool = True
    batch_size: int = Field(8, ge=1)
    max_length: int | None = Field(None, ge=2)
    device: str = "auto"
    dtype: str = "auto"

    @model_validator(mode="after")
    def _band(self) -> PerplexityConfig:
        lo, hi = self.min_perplexity, self.max_perplexity
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_perplexity {lo} > max_perplexity {hi}")
        return self

    def build(self, ctx: BuildContext) -> Stage:
        return PerplexityFilter(self, ctx.base_dir)


def score_sequences(lm: Any, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int) -> list[tuple[float, int]]:
    """Summed negative log-likelihood of each response given its context.

    Args:
        lm: a causal LM (``transformers``), in eval mode.
        pairs: ``(context_ids, response_ids)`` per sequence; the first token of a sequence
            is never scored (it has no context).
        pad_id: id used for right padding (masked out).
        batch_size: sequences per forward pass (sorted by length to limit padding).

    Returns:
        ``(nll_sum_nats, tokens_scored)`` per pair, in input order.
    """
    import torch

    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    device = next(lm.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        seqs = [pairs[i][0] + pairs[i][1] for i in chunk]
        width = max(len(s) for s in seqs)
        if width < 2:
            continue
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for row, (i, seq) in enumerate(zip(chunk, seqs, strict=True)):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
            first = max(len(pairs[i][0]), 1)
            labels[row, first : len(seq)] = ids[row, first : len(seq)]
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with torch.inference_mode():
            logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
            ).view(targets.shape)
            sums = nll.sum(dim=1).tolist()
            counts = (targets != -100).sum(dim=1).tolist()
        for row, i in enumerate(chunk):
            out[i] = (float(sums[row]), int(counts[row]))
    return out


class PerplexityFilter(Stage):
    """Rejects responses whose perplexity under the reference model is outside the band.

    The model loads on the first batch and is released in :meth:`close`. Verdict detail:
    ``perplexity``, ``mean_nll`` (nats per token), ``tokens`` (scored).
    """

    kind = "filter"
    cost = 300.0

    def __init__(self, config: PerplexityConfig, base_dir: Any = None) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.base_dir = base_dir
        self._lm: Any = None
        self._tok: Any = None
        self._max_length = config.max_length

    def _load(self) -> None:
        if self._lm is not None:
            return
        from distillery.backends.transformers_local import load_model_and_tokenizer
        from distillery.builtin.models import resolve_model

        self._lm, self._tok = load_model_and_tokenizer(
            resolve_model(self.config.model, self.base_dir), self.config.device, self.config.dtype
        )
        if self._max_length is None:
            self._max_length = int(getattr(self._lm.config, "max_position_embeddings", 0) or 2048)

    def _context(self, record: dict[str, Any]) -> list[int]:
        tok = self._tok
        messages = list(record.get("prompt") or [])
        if self.config.condition_on_prompt and messages:
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            else:
                text = "\n\n".join(m.get("content") or "" for m in messages) + "\n\n"
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if ids:
                return list(ids)
        bos = tok.bos_token_id
        return [bos] if bos is not None else []

    def pair(self, record: dict[str, Any]) -> tuple[list[int], list[int]]:
        """``(context_ids, response_ids)`` of ``record`` after truncation to ``max_length``."""
        self._load()
        context = self._context(record)
        response = list(self._tok(record.get("response") or "", add_special_tokens=False)["input_ids"])
        limit = int(self._max_length or 2048)
        if len(context) + len(response) > limit:
            response = response[: limit - 1]
            keep = limit - len(response)
            context = context[-keep:] if keep > 0 else []
        return context, response

    def perplexities(self, records: list[dict[str, Any]]) -> list[tuple[float, int]]:
        """``(perplexity, tokens_scored)`` of each record's response (``(nan, 0)`` when nothing is scored)."""
        self._load()
        pairs = [self.pair(r) for r in records]
        scored = score_sequences(self._lm, pairs, self._tok.pad_token_id, self.config.batch_size)
        return [(math.exp(s / n), n) if n else (math.nan, 0) for s, n in scored]

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        lo, hi = self.config.min_perplexity, self.config.max_perplexity
        checks = []
        for ppl, n in self.perplexities(records):
            if n == 0:
                checks.append(Check(False, "empty_response: no response tokens to score", {"tokens": 0}))
                continue
            detail = {"perplexity": round(ppl, 4), "mean_nll": round(math.log(ppl), 4), "tokens": n}
            if hi is not None and ppl > hi:
                checks.append(Check(False, f"too_perplexing: {ppl:.1f} > {hi:g}", detail))
            elif lo is not None and ppl < lo:
                checks.append(Check(False, f"too_predictable: {ppl:.2f} < {lo:g}", detail))
            else:
                checks.append(Check(True, None, detail))
        return checks

    async def check_batch_async(self, records: list[dict[str, Any]]) -> list[Check]:
        """:meth:`check_batch` in a worker thread, so the event loop (judge or teacher calls) keeps running."""
        return await asyncio.to_thread(self.check_batch, records)

    def close(self) -> None:
        self._lm = None
        self._tok = None
