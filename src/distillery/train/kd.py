"""Token-level knowledge distillation from the teacher's next-token distribution.

Built on TRL's ``GKDTrainer`` (Generalized Knowledge Distillation, Agarwal et al., 2024),
which trains on the dataset's responses and, with probability ``lmbda`` per step, on the
student's own samples instead (on-policy), minimising the generalized JSD between teacher and
student distributions at every completion token. Knobs:

- ``kl``: ``forward`` (KL(teacher || student), Hinton et al., 2015), ``reverse``
  (KL(student || teacher), MiniLLM, Gu et al., 2024) or ``jsd`` with ``beta`` in [0, 1];
- ``lmbda``: on-policy fraction (0: off-policy KD on the run's responses; 1: fully on-policy);
- ``temperature``: softens both distributions in the loss and the student's on-policy sampling.

What TRL 1.16 lacks and is written here: ``GKDTrainer.compute_loss`` ignores the temperature
(the ``TemperedGKDTrainer`` of :func:`tempered_gkd_trainer` passes it to the loss,
:func:`distillery.train.losses.kd_loss`), over-long examples (TRL keeps their end, we keep the
start, as SFT does: :func:`tokenize_for_kd`),
and a clear error when teacher and student do not share a tokenizer.
``trl.DistillationTrainer`` (the non-experimental one) is on-policy only (no ``lmbda``), so
GKD is the trainer that fits the paper's knobs.
"""

from __future__ import annotations

import time
import warnings
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
from distillery.train.data import as_prompt_completion
from distillery.train.errors import NoTrainingDataError, TokenizerMismatchError, TrainOptionError
from distillery.train.losses import divergence_beta, gkd_classes, kd_loss


def check_same_tokenizer(student_tok: Any, teacher_tok: Any, student: str, teacher: str) -> None:
    """Raise unless the two tokenizers map the same strings to the same ids.

    Raises:
        TokenizerMismatchError: the vocabularies differ (message gives sizes and differing entries).
    """
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s == t:
        return
    differing = sum(1 for k in s.keys() | t.keys() if s.get(k) != t.get(k))
    raise TokenizerMismatchError(
        f"teacher {teacher!r} and student {student!r} do not share a tokenizer (vocabulary sizes {len(t)} and "
        f"{len(s)}, {differing} entries differ); token-level KD compares next-token distributions over one "
        "vocabulary: use a teacher and student of the same tokenizer family, or --method sft"
    )


def tokenize_for_kd(tokenizer: Any, examples: Iterable[dict[str, Any]], max_length: int) -> tuple[list[dict], int]:
    """Token ids of prompt + completion (chat template applied), cut to ``max_length`` keeping the start.

    TRL's GKD collator keeps the *end* of over-long examples and fails when the prompt is cut
    away; pre-tokenised rows (``input_ids`` + ``completion_mask``, which the collator takes as
    they are) make truncation match SFT's ``keep_start``.

    Returns:
        ``(rows, dropped)``: rows ``{"prompt", "input_ids", "attention_mask", "completion_mask"}``
        (the prompt as text, which the collator reads first; lists of ints, the completion mask
        is 1 on completion tokens), and how many examples were dropped because the
        prompt alone fills ``max_length``.
    """
    rows, dropped = [], 0
    for example in examples:
        ex = as_prompt_completion(example)
        prompt_text = tokenizer.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False)
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        cut = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), min(len(prompt), len(full)))
        if cut >= max_length or cut == len(full):
            dropped += 1
            continue
        ids = full[:max_length]
        rows.append({"prompt": prompt_text, "input_ids": ids, "attention_mask": [1] * len(ids),
                     "completion_mask": [0] * cut + [1] * (len(ids) - cut)})
    return rows, dropped


def _check_vocab_sizes(student_model: Any, teacher_model: Any, student: str, teacher: str) -> None:
    sv = student_model.get_output_embeddings().weight.shape[0]
    tv = teacher_model.get_output_embeddings().weight.shape[0]
    if sv != tv:
        raise TokenizerMismatchError(
            f"teacher {teacher!r} has {tv} output logits and student {student!r} {sv}: their next-token distributions "
            "cannot be compared token by token; use models with the same vocabulary size"
        )


def tempered_gkd_trainer() -> type:
    """The ``TemperedGKDTrainer`` class (made on first use, so importing this module does not import TRL)."""
    _, GKDTrainer = gkd_classes()

    class TemperedGKDTrainer(GKDTrainer):
        """``GKDTrainer`` whose loss uses ``args.temperature`` (see :func:`distillery.train.losses.kd_loss`).

        On-policy sampling (probability ``lmbda``) and sequence handling are TRL's; only the
        loss call differs: the same causal shift and completion mask, with the temperature.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            student_out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            self.teacher_model.eval()
            with torch.no_grad():
                teacher_out = self.teacher_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = kd_loss(
                student_out.logits[:, :-1, :],
                teacher_out.logits[:, :-1, :],
                labels=inputs["labels"][:, 1:],
                beta=self.beta,
                temperature=self.temperature,
                num_items_in_batch=num_items_in_batch,
            )
            return (loss, student_out) if return_outputs else loss

    return TemperedGKDTrainer


def kd_train(
    student: str,
    teacher: str,
    examples: Iterable[dict[str, Any]],
    out_dir: str | Path,
    *,
    kl: str = "forward",
    beta: float | None = None,
    lmbda: float = 0.0,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    provenance: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Distil ``teacher``'s token distributions into ``student`` on ``examples``; save to ``out_dir``.

    Args:
        student, teacher: ``builtin:`` names, folders or Hub ids of causal LMs sharing one tokenizer.
        examples: run records (``prompt`` + ``response``) or ``{"prompt", "completion"}`` dicts;
            the response is the off-policy sequence the divergence is computed on.
        out_dir: the output folder (model, ``metrics.json``, ``README.md``).
        kl: ``forward``, ``reverse`` or ``jsd`` (see :func:`distillery.train.losses.divergence_beta`).
        beta: JSD interpolation weight (``kl="jsd"`` only; default 0.5).
        lmbda: probability that a step trains on the student's own samples (on-policy, GKD).
        temperature: softmax temperature of the loss and of on-policy sampling (> 0).
        max_new_tokens: length of on-policy samples.
        provenance: data provenance for the model card.
        **options: :class:`~distillery.train.common.TrainOptions` fields.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        TokenizerMismatchError: teacher and student tokenizers (or vocabulary sizes) differ.
        NoTrainingDataError: no examples.
        ModelLoadError: a model cannot be loaded.
        TrainOptionError: (a ``ValueError``) a bad ``kl``/``beta``/``lmbda``/``temperature``.
        TypeError: an unknown option.
    """
    from transformers import set_seed

    started = time.perf_counter()
    opts = TrainOptions.take(options)
    if options:
        raise TypeError(f"kd_train: unknown options {sorted(options)}")
    jsd_beta = divergence_beta(kl, beta)
    if not 0.0 <= lmbda <= 1.0:
        raise TrainOptionError(f"lmbda must be in [0, 1], got {lmbda}")
    if temperature <= 0:
        raise TrainOptionError(f"temperature must be > 0, got {temperature}")
    progress_bars(opts.progress)
    tokenizer = load_tokenizer(student)
    check_same_tokenizer(tokenizer, load_tokenizer(teacher, "teacher"), student, teacher)
    data, dropped = tokenize_for_kd(tokenizer, examples, opts.max_length)
    if not data:
        raise NoTrainingDataError(f"kd: no training examples ({dropped} dropped: prompt longer than max_length)")
    out = Path(out_dir)
    set_seed(opts.seed)
    model = load_model(student)
    teacher_model = load_model(teacher, "teacher")
    _check_vocab_sizes(model, teacher_model, student, teacher)
    generation_config = model.generation_config
    lr = opts.lr or default_learning_rate("kd", count_parameters(model))
    GKDConfig, _ = gkd_classes()
    args = trainer_args(
        GKDConfig, opts, out, lr, len(data),
        lmbda=lmbda, beta=jsd_beta, temperature=temperature, max_new_tokens=max_new_tokens, seq_kd=False,
    )
    from datasets import Dataset

    trainer_cls = tempered_gkd_trainer()
    with torch_threads(opts.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fully covered by `DistillationTrainer`.*")
        trainer = trainer_cls(
            model=model, teacher_model=teacher_model, args=args, train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
        )
    quiet(trainer, opts.progress)
    settings = {"teacher": teacher, "kl": kl, "beta": jsd_beta, "lmbda": lmbda, "temperature": temperature,
                "max_new_tokens": max_new_tokens, "learning_rate": lr}
    prov = dict(provenance or {}, teacher=teacher)
    return complete("kd", student, trainer, tokenizer, opts, out, settings, prov, generation_config, started,
                    examples=len(data), dropped_examples=dropped)
