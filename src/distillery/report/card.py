"""The dataset card: a ``README.md`` in the Hugging Face dataset-card format (YAML metadata
header, then prose), generated from the recipe and the report, in the spirit of
"Datasheets for Datasets" (Gebru et al., 2021)."""

from __future__ import annotations

from typing import Any

import yaml

from distillery.generate.strategy import Strategy
from distillery.recipe import Recipe
from distillery.report.diversity import diversity_markdown


def time_summary(report: dict[str, Any]) -> str:
    """``"12.3s (batches 10.1s, reduce 0.4s, diversity 1.6s)"``: the whole run's time and
    where it went (reports from before ``run_time_s`` give ``wall_time_s``)."""
    total = report.get("run_time_s", report.get("wall_time_s", 0.0))
    phases = report.get("phases_s") or {}
    parts = [f"{name} {phases[name]:.1f}s" for name in ("batches", "reduce", "diversity") if phases.get(name)]
    if phases and report.get("run_time_s", 0.0) > report.get("session_wall_s", 0.0) + 0.05:
        parts.append(f"earlier sessions {report['run_time_s'] - report['session_wall_s']:.1f}s")
    return f"{total:.1f}s" + (f" ({', '.join(parts)})" if parts else "")


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def dataset_card(recipe: Recipe, report: dict[str, Any], strategy: Strategy) -> str:
    """Markdown text of the dataset card for a finished run made by ``strategy``."""
    meta = {
        "pretty_name": recipe.name,
        "license": recipe.license,
        "tags": ["synthetic", "distillery", strategy.name.replace("_", "-")],
        "task_categories": ["text-generation"],
        "language": ["en"],
        "size_categories": [_size_category(report["accepted"])],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": "accepted.parquet"},
                    {"split": "rejected", "path": "rejected.parquet"},
                ],
            }
        ],
    }
    s, t = recipe.seeds, recipe.teacher
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description, ""]
    lines += [
        f"Made by distillery {report['distillery_version']} on {report['finished_at']} (recipe hash `{report['recipe_hash']}`; "
        "the resolved recipe is `recipe.yaml` beside this card).",
        "",
        "## How it was made",
        "",
        f"- **Seeds**: `{s.path}`" + (f" (limit {s.limit})" if s.limit else "") + (f", shuffled with seed {s.shuffle_seed}" if s.shuffle_seed is not None else "")
        + f": {report['seeds']} rows.",
    ]
    if strategy.needs_teacher and t is not None:
        lines.append(
            f"- **Teacher**: `{t.model}` through the `{t.backend}` backend; sampling {t.sampling.model_dump(exclude_none=True)}."
        )
    lines.append(f"- {strategy.describe()} {report['candidates']} candidates"
                 + (f" in {report['waves']} waves." if report.get("waves") else "."))
    stage_list = ", ".join(f"`{st['name']}` ({st['kind']})" for st in report["stages"] if st["kind"] not in ("read", "generate"))
    lines += [
        f"- **Checks, in the order run**: {stage_list or 'none'}.",
        "",
        "## Funnel",
        "",
        "| stage | kind | in | out | kept |",
        "|---|---|---:|---:|---:|",
    ]
    for row in report["funnel"]:
        kept = f"{row['out'] / row['in']:.1%}" if row["in"] else "-"
        lines.append(f"| {row['stage']} | {row['kind']} | {row['in']} | {row['out']} | {kept} |")
    lines += [
        "",
        f"Accepted **{report['accepted']}** of {report['candidates']} candidates (accept rate {report['accept_rate']:.1%}); "
        f"{report['rejected']} rejected records are kept in `rejected.parquet` with the stage and reason of rejection.",
        "",
        "Rejection reasons by stage:",
        "",
    ]
    for st in report["stages"]:
        if st["reasons"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in st["reasons"].items())
            lines.append(f"- `{st['name']}`: {reasons}")
    tok = report["tokens"]
    lines += [
        "",
        f"Tokens in/out: {tok['in']}/{tok['out']} (billed {tok['billed_in']}/{tok['billed_out']}); "
        f"estimated cost {report['cost']['estimated']} {report['cost']['currency']}; processing time {time_summary(report)}.",
        "",
        *([diversity_markdown(report["diversity"]), ""] if report.get("diversity") else []),
        "## Provenance",
        "",
        "Every record carries its seed (`seed`, `seed_id`, `seed_index`, `seed_source`), the conversation (`messages`: "
        "`prompt`, the messages sent, then `completion`, the response), the teacher and backend, the strategy with its "
        "parameters and intermediate steps (`strategy`, `strategy_params`, `steps`), the sampling parameters, the "
        "prompt-template hash, the sample index, token counts, "
        "latency, whether it came from the response cache, every check's verdict (`verdicts`: stage, name, passed, detail), "
        "`accepted` with `reject_stage` and `reject_reason`, the distillery version and a timestamp.",
        "",
        "## Limitations",
        "",
        "- Verifiers check what they check: a correct final answer can follow flawed reasoning, and a checker can "
        "reject a correct answer written in an unexpected form (see `rejected.parquet`).",
        "- Decontamination finds verbatim n-gram overlap with the listed benchmarks only; paraphrases and translations pass.",
        "- Near-duplicate removal keeps the first record of each cluster in seed order.",
        "- The data inherits the biases and licence terms of its seeds and of the teacher model's outputs.",
        "",
    ]
    return "\n".join(lines)
