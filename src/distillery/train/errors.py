"""Errors of ``distillery distill``: each says which run, model or option is at fault and what to do."""

from __future__ import annotations

from distillery.errors import DistilleryError


class TrainError(DistilleryError):
    """Base of the training errors (a :class:`DistilleryError`: the CLI prints it and exits 1)."""


class RunDirError(TrainError):
    """The run directory is missing or is not a finished run (no ``accepted.parquet``)."""


class NoTrainingDataError(TrainError):
    """Nothing to train on: no accepted records (SFT, KD) or no preference pairs (DPO)."""


class TokenizerMismatchError(TrainError):
    """Teacher and student do not share a tokenizer, so their next-token distributions cannot be compared."""


class ModelLoadError(TrainError):
    """A student or teacher model cannot be loaded (missing folder, Hub name without network)."""


class TrainOptionError(TrainError, ValueError):
    """An option value is out of range or unknown (e.g. ``beta`` outside [0, 1], ``--kl sideways``)."""
