"""``distillery improve``: verified self-training, round after round.

Each round the current model samples ``k`` programs for each training problem (through the
pipeline: the same sampler, sandboxed verifier, deduplication and decontamination as any
run, with provenance and a response cache), the verifier keeps the correct ones, and the
model is fine-tuned on them with SFT. This is STaR (Zelikman et al., 2022), rejection-sampling
fine-tuning (RFT; Yuan et al., 2023) and ReST-EM (Singh et al., 2023) — they differ in the
options below:

- ``restart="base"`` fine-tunes the base model on each round's data (STaR, ReST-EM);
  ``"previous"`` continues from the last round's model.
- ``rationalize``: for problems with no correct sample, STaR's rationalization samples again
  with the answer given as a hint, and keeps correct programs paired with the question
  *without* the hint.
- ``mix_gold``: adds gold solutions, as a fraction of the self-generated examples, from
  training problems disjoint from the sampled ones (mixing real data against model collapse:
  Shumailov et al., 2023; Gerstgrasser et al., 2024).
- ``keep_unverified`` turns the verifier off (every sample is kept): the unfiltered control.

Per round the report records accuracy on held-out test problems, the accept rate, diversity
of the kept programs (distinct-n, mean pairwise embedding similarity) and tokens spent.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery.io.atomic import atomic_write_text

HINT_TEMPLATE = "{{ question }}\nHint: the answer is {{ answer }}."


@dataclass
class ImproveConfig:
    """Options of the self-improvement loop (see the module docstring).

    Attributes:
        model: the base model (``builtin:student``, a folder or a Hub name).
        rounds: fine-tuning rounds R.
        problems: training problems sampled each round (the same problems every round).
        samples: candidates per problem per round (k).
        temperature: sampling temperature.
        mix_gold: gold examples added, as a fraction of the round's self-generated examples.
        rationalize: STaR's rationalization on problems with no correct sample.
        restart: ``"base"`` or ``"previous"``.
        keep_unverified: keep every sample (no verifier): the unfiltered control.
        steps, lr, batch_size: SFT settings per round.
        eval_problems: held-out test problems (stratified by difficulty) evaluated each round.
        seed: seed of problems, sampling and training.
        difficulties: ``arith`` levels of the training and held-out problems (``None``: all).
        threads: torch threads for training (``None``: all available).
    """

    model: str = "builtin:student"
    rounds: int = 3
    problems: int = 400
    samples: int = 4
    temperature: float = 0.8
    mix_gold: float = 0.0
    rationalize: bool = False
    restart: str = "base"
    keep_unverified: bool = False
    steps: int = 150
    lr: float | None = None
    batch_size: int = 16
    eval_problems: int = 200
    seed: int = 0
    threads: int | None = None
    difficulties: tuple[int, ...] | None = None
    max_new_tokens: int = 192
    embedding_model: str | None = "default"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> tuple[int, ...]:
        """The ``arith`` difficulty levels in use (all five when ``difficulties`` is ``None``)."""
        return tuple(self.difficulties or (1, 2, 3, 4, 5))


def _recipe(model: str, out: Path, cfg: ImproveConfig, seeds: dict[str, Any], template: str = "{{ question }}") -> Any:
    from distillery.recipe import Recipe

    verifiers = [] if cfg.keep_unverified else [{"type": "python_program", "reference": "answer"}]
    return Recipe.from_dict(
        {
            "name": out.name,
            "seeds": seeds,
            "prompt": {"template": template},
            "teacher": {
                "backend": "transformers",
                "model": model,
                "batch_size": 64,
                "device": "cpu",
                "sampling": {"temperature": cfg.temperature, "top_p": 1.0, "max_tokens": cfg.max_new_tokens, "seed": cfg.seed},
            },
            "generation": {"samples_per_prompt": cfg.samples},
            "verifiers": verifiers,
            "filters": [{"type": "length", "min_tokens": 1}],
            "dedup": [{"type": "exact", "fields": ["prompt", "response"]}],
            "decontamination": {"type": "ngram", "benchmarks": ["arith_test"], "fields": ["prompt"]},
            "output": {"dir": str(out), "batch_size": 200},
            "report": {"diversity_sample": 100, "embedding_model": cfg.embedding_model},
        }
    )


def sample_round(model: str, out: Path, cfg: ImproveConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample and verify one round: ``(training examples, pipeline report)``.

    Examples are ``{"prompt": messages, "completion": program}`` of the kept candidates; with
    ``rationalize`` they include hint-guided programs, paired with the hint-free question.
    """
    import pyarrow.parquet as pq

    from distillery.pipeline.runner import Pipeline

    seeds = {"path": "builtin:arith", "options": {"n": cfg.problems, "split": "train", "seed": cfg.seed,
                                                  "difficulties": list(cfg.levels)}}
    report = Pipeline(_recipe(model, out / "samples", cfg, seeds), progress=False).run()
    accepted = pq.read_table(out / "samples" / "accepted.parquet").to_pylist()
    examples = [{"prompt": r["prompt"], "completion": r["response"]} for r in accepted]
    report["rationalized"] = 0
    if cfg.rationalize and not cfg.keep_unverified:
        solved = {r["seed_id"] for r in accepted}
        from distillery.builtin.arith import generate

        failed = [p.to_dict() for p in generate(cfg.problems, split="train", seed=cfg.seed,
                                                 difficulties=cfg.levels) if p.id not in solved]
        if failed:
            path = out / "unsolved.jsonl"
            atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in failed))
            hinted = Pipeline(_recipe(model, out / "rationalized", cfg, {"path": str(path)}, HINT_TEMPLATE), progress=False).run()
            kept = pq.read_table(out / "rationalized" / "accepted.parquet").to_pylist()
            examples += [{"prompt": [{"role": "user", "content": r["seed"]["question"]}], "completion": r["response"]} for r in kept]
            report["rationalized"] = hinted["accepted"]
    return examples, report


def gold_examples(count: int, cfg: ImproveConfig, offset: int = 10_000) -> list[dict[str, Any]]:
    """``count`` gold (question, program) pairs from training problems disjoint from the sampled ones."""
    from distillery.builtin.arith import generate

    if count <= 0:
        return []
    return [
        {"prompt": [{"role": "user", "content": p.question}], "completion": p.program}
        for p in generate(count, split="train", seed=cfg.seed + offset, difficulties=cfg.levels)
    ]


def evaluate_round(model: str, cfg: ImproveConfig) -> dict[str, Any]:
    """Greedy accuracy of ``model`` on ``cfg.eval_problems`` held-out test problems."""
    from distillery.evaluate.harness import evaluate

    result = evaluate(model, "arith", "test", cfg.eval_problems, batch_size=64, device="cpu",
                      max_new_tokens=cfg.max_new_tokens, difficulties=cfg.difficulties)
    return {
        "accuracy": result["greedy"]["accuracy"],
        "per_difficulty": {d: r["accuracy"] for d, r in result["greedy"].get("per_difficulty", {}).items()},
    }


def improve(cfg: ImproveConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the loop; write ``improve.json`` (and each round's data and model) under ``out_dir``.

    Returns:
        ``{"config", "rounds": [{"round", "accuracy", "per_difficulty", "accept_rate", "examples",
        "gold", "rationalized", "diversity", "tokens", "seconds", "model"}]}``; round 0 is the base model.
    """
    from distillery.train.sft import sft_train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Any]] = []
    started = time.perf_counter()
    base = cfg.model
    current = cfg.model
    rounds.append({"round": 0, "model": current, **evaluate_round(current, cfg)})
    rng = random.Random(cfg.seed)
    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        rdir = out / f"round-{r}"
        examples, report = sample_round(current, rdir, cfg)
        self_made = len(examples)
        gold = gold_examples(round(cfg.mix_gold * self_made), cfg)
        data = examples + gold
        rng.shuffle(data)
        start_from = base if cfg.restart == "base" else current
        metrics = None
        if data:
            options = {"steps": cfg.steps, "batch_size": cfg.batch_size, "seed": cfg.seed + r, "progress": False}
            if cfg.lr is not None:
                options["lr"] = cfg.lr
            if cfg.threads is not None:
                options["threads"] = cfg.threads
            metrics = sft_train(start_from, data, rdir / "model", provenance={"run_dir": str(rdir / "samples")}, **options)
            current = str(rdir / "model")
        diversity = report.get("diversity") or {}
        rounds.append(
            {
                "round": r,
                "model": current,
                **evaluate_round(current, cfg),
                "accept_rate": report["accept_rate"],
                "problems_solved": report["prompts_with_accepted"],
                "examples": self_made,
                "gold": len(gold),
                "rationalized": report.get("rationalized", 0),
                "diversity": {k: diversity.get(k) for k in ("distinct_1", "distinct_2", "mean_pairwise_cosine", "vendi_score")},
                "tokens": {"sampled_out": report["tokens"]["out"], "train": metrics.get("train_tokens") if metrics else 0},
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        atomic_write_text(out / "improve.json", json.dumps({"config": asdict(cfg), "rounds": rounds}, indent=2))
    result = {"config": asdict(cfg), "rounds": rounds, "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(out / "improve.json", json.dumps(result, indent=2))
    return result
