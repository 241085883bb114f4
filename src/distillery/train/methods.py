"""The training methods ``distill`` offers, registered under kind ``training_method``.

A method says which options it takes beyond :class:`~distillery.train.common.TrainOptions`,
and how it turns a finished run into a trained student. Add one with
``@register("training_method")`` on a :class:`TrainingMethod` factory (see the three below);
``distillery distill --method NAME`` and :func:`distillery.train.api.distill` find it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery import registry
from distillery.train.data import RunData, require_accepted, require_pairs
from distillery.train.errors import ModelLoadError, TrainError


@dataclass(frozen=True)
class TrainingMethod:
    """A way to train a student on a run.

    Attributes:
        name: ``--method`` value.
        summary: one line for ``--help``.
        options: options of this method only (the shared ones are ``TrainOptions``' fields).
        train: ``(run, student, out, provenance, teacher=..., pairs_per_prompt=..., **options) -> metrics``.
    """

    name: str
    summary: str
    options: frozenset[str]
    train: Callable[..., dict[str, Any]]


def _sft(run: RunData, student: str, out: Path, provenance: dict[str, Any], **kw: Any) -> dict[str, Any]:
    from distillery.train.sft import sft_train

    kw.pop("teacher", None)
    kw.pop("pairs_per_prompt", None)
    records = require_accepted(run)
    provenance["data"] = {"examples": len(records), "accepted_records": len(run.accepted)}
    return sft_train(student, records, out, provenance=provenance, **kw)


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


def _kd(run: RunData, student: str, out: Path, provenance: dict[str, Any], *, teacher: str | None = None,
        **kw: Any) -> dict[str, Any]:
    from distillery.train.kd import kd_train

    kw.pop("pairs_per_prompt", None)
    records = require_accepted(run)
    from_run = teacher is None
    teacher = teacher or run_teacher(run)
    provenance["data"] = {"examples": len(records), "accepted_records": len(run.accepted)}
    try:
        return kd_train(student, teacher, records, out, provenance=provenance, **kw)
    except ModelLoadError as e:
        if from_run and str(e).startswith("teacher"):
            raise ModelLoadError(
                f"{e} (the run's teacher, backend {run.teacher_backend}); pass --teacher with a local model "
                "that shares the student's tokenizer"
            ) from None
        raise


def _dpo(run: RunData, student: str, out: Path, provenance: dict[str, Any], *, pairs_per_prompt: int = 1,
         **kw: Any) -> dict[str, Any]:
    from distillery.train.dpo import dpo_train

    kw.pop("teacher", None)
    pairs, stats = require_pairs(run, pairs_per_prompt)
    provenance["data"] = {"pairs": stats.pairs, "prompts_with_pairs": stats.prompts_with_pairs,
                          "rejected_usable": stats.rejected_usable, "rejected_skipped": stats.rejected_skipped}
    return dpo_train(student, pairs, out, provenance=provenance, **kw)


for _method in (
    TrainingMethod("sft", "supervised fine-tuning on the accepted responses", frozenset({"packing"}), _sft),
    TrainingMethod("kd", "knowledge distillation on the teacher's token distributions (GKD with lmbda)",
                   frozenset({"kl", "beta", "lmbda", "temperature", "max_new_tokens"}), _kd),
    TrainingMethod("dpo", "direct preference optimisation on accepted-vs-rejected pairs",
                   frozenset({"beta", "loss_type"}), _dpo),
):
    registry.add("training_method", _method.name, _method)
