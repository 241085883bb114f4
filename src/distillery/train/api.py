"""``distill``: train a student on a finished run's data (SFT, KD or DPO), from Python or the CLI.

Example::

    from distillery.train.api import distill
    metrics = distill("runs/gsm8k", "builtin:student", "sft", "runs/gsm8k-student-sft", steps=200)
    metrics["loss_curve"], metrics["train_tokens_per_s"]

The lower-level trainers take examples directly (no run directory), for loops such as
STaR / RFT that build their own data: :func:`distillery.train.sft.sft_train`,
:func:`distillery.train.kd.kd_train`, :func:`distillery.train.dpo.dpo_train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery import registry
from distillery.train.data import RunData, load_run
from distillery.train.errors import TrainOptionError
from distillery.train.methods import run_teacher  # noqa: F401 (part of this module's API)


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
        method: a registered training method (:mod:`distillery.train.methods`): ``sft``
            (accepted responses), ``kd`` (teacher's token distributions on accepted responses,
            plus on-policy samples with ``lmbda``) or ``dpo`` (accepted vs rejected pairs).
        out_dir: output folder; default ``<run_dir>-student-<method>`` beside the run directory
            (not inside it: the run directory is the dataset, uploaded as it is).
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
    methods = registry.items("training_method")
    if method not in methods:
        raise TrainOptionError(f"unknown method {method!r}; use one of {', '.join(methods)}")
    options = {k: v for k, v in options.items() if v is not None}
    own = set().union(*(m.options for m in methods.values()))
    wrong = (set(options) & own) - methods[method].options
    if wrong:
        raise TrainOptionError(f"option(s) {', '.join(sorted(wrong))} do not apply to --method {method}")
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path.parent / f"{run.path.name}-student-{method}"
    return methods[method].train(run, student, out, run_provenance(run), teacher=teacher,
                                 pairs_per_prompt=pairs_per_prompt, **options)
