"""``distill``: train a student on a finished run's data (SFT, KD or DPO), from Python or the CLI.

Example::

    from distillery.train.api import distill
    metrics = distill("runs/gsm8k", "builtin:student", "sft", "runs/gsm8k/student-sft", steps=200)
    metrics["loss_curve"], metrics["train_tokens_per_s"]

The lower-level trainers take examples directly (no run directory), for loops such as
STaR / RFT that build their own data: :func:`distillery.train.sft.sft_train`,
:func:`distillery.train.kd.kd_train`, :func:`distillery.train.dpo.dpo_train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery.train.common import METHODS
from distillery.train.data import RunData, load_run, require_accepted, require_pairs
from distillery.train.errors import ModelLoadError, TrainError, TrainOptionError

# Options that only some methods take (the rest are TrainOptions, taken by all).
METHOD_OPTIONS = {
    "sft": {"packing"},
    "kd": {"kl", "beta", "lmbda", "temperature", "max_new_tokens"},
    "dpo": {"beta", "loss_type"},
}
_ALL_METHOD_OPTIONS = set().union(*METHOD_OPTIONS.values())


def run_provenance(run: RunData) -> dict[str, Any]:
    """What the model card says about the data: run directory, recipe name and hash, report figures."""
    report = run.report
    keys = ("mode", "seeds", "candidates", "accepted", "rejected", "accept_rate", "teacher", "finished_at")
    return {
        "run_dir": str(run.path),
        "recipe_name": run.recipe.get("name") or report.get("name"),
        "recipe_hash": report.get("recipe_hash"),
        "report": {k: report[k] for k in keys if k in report},
    }


def run_teacher(run: RunData) -> str:
    """The run's teacher model name (``teacher.model`` of its recipe, e.g. ``builtin:teacher``).

    Raises:
        TrainError: the run has no teacher (curate mode).
    """
    if not run.teacher:
        raise TrainError(
            f"{run.path}: the run has no teacher (curate mode: responses came from the seeds); "
            "pass --teacher MODEL for knowledge distillation"
        )
    return run.teacher


def distill(
    run_dir: str | Path,
    student: str,
    method: str,
    out_dir: str | Path | None = None,
    *,
    teacher: str | None = None,
    pairs_per_prompt: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """Train ``student`` on the run in ``run_dir`` with ``method`` and save it to ``out_dir``.

    Args:
        run_dir: a finished run directory (``accepted.parquet``, ``rejected.parquet``, ``report.json``...).
        student: ``builtin:student``, a model folder or a Hub id.
        method: ``sft`` (accepted responses), ``kd`` (teacher's token distributions on accepted
            responses, plus on-policy samples with ``lmbda``) or ``dpo`` (accepted vs rejected pairs).
        out_dir: output folder; default ``<run_dir>/student-<method>``.
        teacher: KD teacher; default the run's ``teacher.model``.
        pairs_per_prompt: DPO: most pairs per prompt.
        **options: :class:`~distillery.train.common.TrainOptions` fields (``steps``, ``epochs``, ``lr``,
            ``batch_size``, ``seed``...) and the method's own: sft ``packing``; kd ``kl``, ``beta``,
            ``lmbda``, ``temperature``, ``max_new_tokens``; dpo ``beta``, ``loss_type``. ``None``
            values are dropped (defaults apply).

    Returns:
        The metrics (also in ``<out_dir>/metrics.json``), with ``out_dir`` and ``data`` (counts of
        examples or pairs used).

    Raises:
        RunDirError: missing or unfinished run directory.
        NoTrainingDataError: no accepted records (sft, kd) or no pairs (dpo).
        TokenizerMismatchError: kd with a teacher of another tokenizer.
        ModelLoadError: a model cannot be loaded.
        TrainOptionError: an unknown method, an option the method does not take, a value out of range.
        TrainError: kd without a teacher (curate-mode run and no ``teacher``).
    """
    if method not in METHODS:
        raise TrainOptionError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    options = {k: v for k, v in options.items() if v is not None}
    wrong = (set(options) & _ALL_METHOD_OPTIONS) - METHOD_OPTIONS[method]
    if wrong:
        raise TrainOptionError(f"option(s) {', '.join(sorted(wrong))} do not apply to --method {method}")
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / f"student-{method}"
    provenance = run_provenance(run)
    if method == "sft":
        from distillery.train.sft import sft_train

        records = require_accepted(run)
        provenance["data"] = {"examples": len(records), "accepted_records": len(run.accepted)}
        return sft_train(student, records, out, provenance=provenance, **options)
    if method == "kd":
        from distillery.train.kd import kd_train

        records = require_accepted(run)
        from_run = teacher is None
        teacher = teacher or run_teacher(run)
        provenance["data"] = {"examples": len(records), "accepted_records": len(run.accepted)}
        try:
            return kd_train(student, teacher, records, out, provenance=provenance, **options)
        except ModelLoadError as e:
            if from_run and str(e).startswith("teacher"):
                raise ModelLoadError(
                    f"{e} (the run's teacher, backend {run.teacher_backend}); pass --teacher with a local model "
                    "that shares the student's tokenizer"
                ) from None
            raise
    from distillery.train.dpo import dpo_train

    pairs, stats = require_pairs(run, pairs_per_prompt)
    provenance["data"] = {"pairs": stats.pairs, "prompts_with_pairs": stats.prompts_with_pairs,
                          "rejected_usable": stats.rejected_usable, "rejected_skipped": stats.rejected_skipped}
    return dpo_train(student, pairs, out, provenance=provenance, **options)
