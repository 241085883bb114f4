"""The token-level distillation loss: forward KL, reverse KL and the generalized JSD, with temperature.

For teacher distribution ``p`` and student distribution ``q`` over the vocabulary at one
position, both softened by a temperature ``T`` (``p = softmax(z_teacher / T)``,
``q = softmax(z_student / T)``), the generalized Jensen-Shannon divergence of GKD
(Agarwal et al., 2024, eq. 1) is::

    JSD(beta)(p || q) = beta * KL(p || m) + (1 - beta) * KL(q || m),   m = beta * p + (1 - beta) * q

with the two limits taken as the KL divergences themselves: ``beta = 0`` is the forward KL
``KL(p || q)`` (classic KD, Hinton et al., 2015: mean-seeking, the student covers every mode of
the teacher) and ``beta = 1`` the reverse KL ``KL(q || p)`` (MiniLLM, Gu et al., 2024:
mode-seeking, the student avoids regions the teacher finds unlikely). The loss is summed over
the vocabulary and averaged over the completion tokens (labels ``!= -100``); no ``T^2`` factor.

TRL's ``GKDTrainer.generalized_jsd_loss`` computes exactly this, but ``GKDTrainer.compute_loss``
(TRL 1.16) calls it without the temperature, so the temperature only softens on-policy
sampling there. :func:`kd_loss` is the loss with the temperature applied, which
:func:`distillery.train.kd.tempered_gkd_trainer` uses; :func:`divergence_beta` maps our
``forward`` / ``reverse`` / ``jsd`` names onto ``beta``.
"""

from __future__ import annotations

from typing import Any

from distillery.train.errors import TrainOptionError

KL_KINDS = ("forward", "reverse", "jsd")


def gkd_classes() -> tuple[type, type]:
    """TRL's ``(GKDConfig, GKDTrainer)``, imported without the "trl.experimental" notice."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    return GKDConfig, GKDTrainer


def divergence_beta(kl: str, beta: float | None = None) -> float:
    """The generalized-JSD ``beta`` of a divergence name.

    Args:
        kl: ``forward`` (beta 0), ``reverse`` (beta 1) or ``jsd`` (``beta``, default 0.5).
        beta: only for ``jsd``: the interpolation weight in [0, 1].

    Raises:
        TrainOptionError: (a ``ValueError``) an unknown name, ``beta`` outside [0, 1], or ``beta`` given with ``forward``/``reverse``
            at a value other than theirs.
    """
    if kl not in KL_KINDS:
        raise TrainOptionError(f"unknown divergence {kl!r}; use one of {', '.join(KL_KINDS)}")
    if beta is not None and not 0.0 <= beta <= 1.0:
        raise TrainOptionError(f"beta must be in [0, 1], got {beta}")
    fixed = {"forward": 0.0, "reverse": 1.0}.get(kl)
    if fixed is not None:
        if beta is not None and beta != fixed:
            raise TrainOptionError(f"--kl {kl} means beta={fixed:g}; for beta={beta:g} use --kl jsd")
        return fixed
    return 0.5 if beta is None else float(beta)


def kd_loss(
    student_logits: Any,
    teacher_logits: Any,
    labels: Any | None = None,
    beta: float = 0.0,
    temperature: float = 1.0,
    num_items_in_batch: Any | None = None,
) -> Any:
    """Generalized JSD between temperature-softened teacher and student next-token distributions.

    Args:
        student_logits, teacher_logits: float tensors ``(batch, positions, vocab)``, aligned
            (position ``i`` predicts token ``i + 1``; shift before calling).
        labels: long tensor ``(batch, positions)``: ``-100`` marks positions left out (prompt,
            padding); ``None`` keeps all.
        beta: 0 forward KL, 1 reverse KL, in between JSD(beta) (see the module docstring).
        temperature: ``T > 0`` dividing both logits before the softmax.
        num_items_in_batch: when given, the summed divergence is divided by it (the token count
            over gradient-accumulation steps) instead of by the local count of kept positions.

    Returns:
        A scalar tensor: nats per kept position.

    Raises:
        TrainOptionError: (a ``ValueError``) ``temperature <= 0``.
    """
    if temperature <= 0:
        raise TrainOptionError(f"temperature must be > 0, got {temperature}")
    import torch

    _, GKDTrainer = gkd_classes()
    if labels is None:  # TRL divides by the batch size when no labels are given; we want per position
        labels = torch.zeros(student_logits.shape[:-1], dtype=torch.long, device=student_logits.device)
    return GKDTrainer.generalized_jsd_loss(
        student_logits, teacher_logits, labels=labels, beta=beta, temperature=temperature,
        num_items_in_batch=num_items_in_batch,
    )
