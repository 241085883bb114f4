"""Direct preference optimization on the run's verified-vs-rejected pairs.

DPO (Rafailov et al., 2023) raises the student's log-likelihood ratio, against a frozen copy
of itself (the reference), of the chosen (accepted) response over the rejected one:
``loss = -log sigmoid(beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))))``;
``beta`` sets how far the student may move from the reference. Uses TRL's ``DPOTrainer`` as is
(sigmoid loss by default; any of TRL's ``loss_type`` values may be named).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillery.train.common import (
    TrainOptions,
    complete,
    count_parameters,
    default_learning_rate,
    load_model,
    load_tokenizer,
    progress_bars,
    quiet,
    torch_threads,
    trainer_args,
)
from distillery.train.errors import NoTrainingDataError, TrainOptionError


def dpo_train(
    student: str,
    pairs: Iterable[dict[str, Any]],
    out_dir: str | Path,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    provenance: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``student`` by DPO on preference ``pairs`` and save it to ``out_dir``.

    Args:
        student: ``builtin:student``, a model folder or a Hub id; also the frozen reference.
        pairs: ``{"prompt": messages, "chosen": [assistant message], "rejected": [assistant message]}``
            (TRL's conversational preference format, as :func:`distillery.train.data.dpo_pairs` builds).
        out_dir: the output folder (model, ``metrics.json``, ``README.md``).
        beta: DPO's beta (inverse temperature of the implicit reward; larger: stay nearer the reference).
        loss_type: a TRL DPO loss (``sigmoid``, ``ipo``, ``hinge``, ...).
        provenance: data provenance for the model card.
        **options: :class:`~distillery.train.common.TrainOptions` fields (``batch_size`` counts pairs).

    Returns:
        The metrics written to ``metrics.json`` (the loss curve entries also hold TRL's reward
        margins and accuracies).

    Raises:
        NoTrainingDataError: no pairs.
        TrainOptionError: ``beta <= 0`` or an out-of-range option.
        ModelLoadError: the student cannot be loaded.
        TypeError: an unknown option.
    """
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    started = time.perf_counter()
    opts = TrainOptions.take(options)
    if options:
        raise TypeError(f"dpo_train: unknown options {sorted(options)}")
    if beta <= 0:
        raise TrainOptionError(f"dpo: beta must be > 0, got {beta}")
    data = list(pairs)
    if not data:
        raise NoTrainingDataError("dpo: no preference pairs")
    out = Path(out_dir)
    progress_bars(opts.progress)
    set_seed(opts.seed)
    tokenizer = load_tokenizer(student)
    model = load_model(student)
    ref_model = load_model(student, "reference")
    generation_config = model.generation_config
    lr = opts.lr or default_learning_rate("dpo", count_parameters(model))
    args = trainer_args(DPOConfig, opts, out, lr, len(data), beta=beta, loss_type=[loss_type])
    from datasets import Dataset

    with torch_threads(opts.threads):
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(data),
                             processing_class=tokenizer)
    quiet(trainer, opts.progress)
    settings = {"beta": beta, "loss_type": loss_type, "learning_rate": lr}
    return complete("dpo", student, trainer, tokenizer, opts, out, settings, provenance, generation_config, started,
                    pairs=len(data), examples=len(data))
