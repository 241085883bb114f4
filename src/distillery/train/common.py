"""What every training method shares: options, CPU-friendly trainer arguments, model loading,
the loss-curve callback, saving the student and writing ``metrics.json``.

Defaults suit CPUs and tiny models (the built-in student has < 1M parameters): fp32 on CPU
(bf16 mixed precision only on a CUDA GPU that supports it), no gradient checkpointing, no
evaluation, no checkpoints (the final model only), no loggers (``report_to=[]``), data
loading in the main process, and a fixed seed for model, data order and sampling.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillery.train.errors import ModelLoadError

# Learning rates by method for (tiny models < 10M parameters, larger models). Tiny randomly
# initialised students need large steps to move within a few hundred updates; pretrained
# models use the usual fine-tuning rates (TRL's defaults: SFT 2e-5, DPO 1e-6).
_DEFAULT_LR = {"sft": (1e-3, 2e-5), "kd": (1e-3, 2e-5), "dpo": (1e-4, 1e-6)}
TINY_PARAMS = 10_000_000


@dataclass
class TrainOptions:
    """Optimisation options shared by SFT, KD and DPO.

    Attributes:
        steps: optimizer steps (``max_steps``); ``None`` trains for ``epochs``.
        epochs: passes over the data when ``steps`` is ``None``.
        lr: peak learning rate; ``None``: :func:`default_learning_rate`.
        batch_size: examples (SFT, KD) or preference pairs (DPO) per device per step.
        grad_accum: gradient accumulation steps.
        max_length: most tokens per example (prompt + completion); longer ones are truncated.
        seed: seed of model init, data order, dropout and sampling.
        logging_steps: steps between logged losses; ``None``: about 25 points per run.
        warmup_ratio: fraction of steps of linear warm-up.
        lr_scheduler: a transformers scheduler name (``linear``, ``cosine``, ``constant``...).
        weight_decay: AdamW weight decay.
        threads: CPU threads for torch (``torch.set_num_threads``); ``None``: the CPUs this process may use.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        progress: draw a progress bar (otherwise training is silent).
    """

    steps: int | None = None
    epochs: float = 1.0
    lr: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    seed: int = 0
    logging_steps: int | None = None
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    threads: int | None = None
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        from distillery.train.errors import TrainOptionError

        checks = {
            "steps": self.steps is None or self.steps >= 1,
            "epochs": self.epochs > 0,
            "lr": self.lr is None or self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "max_length": self.max_length >= 2,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "threads": self.threads is None or self.threads >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise TrainOptionError(", ".join(f"{k}={getattr(self, k)!r} is out of range" for k in bad))

    @classmethod
    def take(cls, options: dict[str, Any]) -> TrainOptions:
        """Pop this class's fields out of ``options`` (a dict of keyword arguments) into an instance;
        ``None`` values leave the default."""
        names = set(cls.__dataclass_fields__)
        taken = {k: options.pop(k) for k in list(options) if k in names}
        return cls(**{k: v for k, v in taken.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: :func:`available_cpus`), then restore."""
    import torch

    before = torch.get_num_threads()
    n = n or available_cpus()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> str:
    """``cuda`` for ``auto`` when a GPU is present, else ``cpu``; other values pass through."""
    from distillery.backends.transformers_local import pick_device

    return pick_device(device)


def count_parameters(model: Any) -> int:
    """Number of parameters of a torch module (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def default_learning_rate(method: str, n_params: int) -> float:
    """The default peak learning rate of ``method`` for a model of ``n_params`` parameters
    (``1e-3``/``1e-3``/``1e-4`` for SFT/KD/DPO below 10M parameters, else ``2e-5``/``2e-5``/``1e-6``)."""
    tiny, large = _DEFAULT_LR[method]
    return tiny if n_params < TINY_PARAMS else large


def resolve_model_name(name: str) -> str:
    """``builtin:<name>`` -> the shipped folder; paths and Hub names unchanged.

    Raises:
        ModelLoadError: an unknown built-in model.
    """
    from distillery.builtin.models import resolve_model

    try:
        return resolve_model(name)
    except FileNotFoundError as e:
        raise ModelLoadError(str(e)) from None


def load_tokenizer(name: str, role: str = "student") -> Any:
    """The tokenizer of model ``name`` (built-in name, folder or Hub name), with a pad token.

    Raises:
        ModelLoadError: it cannot be loaded, or it has no chat template (the data are chats).
    """
    from transformers import AutoTokenizer

    path = resolve_model_name(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{role}: cannot load the tokenizer of {name!r}: {str(e).splitlines()[0]}") from None
    if not getattr(tok, "chat_template", None):
        raise ModelLoadError(f"{role}: the tokenizer of {name!r} has no chat template; the run's data are chats")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        # A tokenizer saved right after a call with ``truncation=True`` keeps that truncation in
        # tokenizer.json; TRL's GKD collator encodes with the backend directly and would cut every
        # example at that length. Truncation is the trainers' job (``max_length``).
        backend.no_truncation()
        backend.no_padding()
    return tok


def load_model(name: str, role: str = "student") -> Any:
    """``AutoModelForCausalLM`` ``name`` in fp32 (mixed precision, when used, is the trainer's job).

    Raises:
        ModelLoadError: the model cannot be loaded (missing folder, Hub name with no network).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_name(name)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{role}: cannot load model {name!r}: {str(e).splitlines()[0]}") from None


def trainer_args(config_cls: type, options: TrainOptions, out_dir: Path, lr: float, n_examples: int,
                 **extra: Any) -> Any:
    """A TRL config (``SFTConfig``, ``GKDConfig``, ``DPOConfig``) with the CPU-friendly defaults
    (module docstring), ``options`` and ``extra`` (method-specific fields)."""
    import torch

    device = resolve_device(options.device)
    cuda = device.startswith("cuda")
    per_step = options.batch_size * options.grad_accum
    total = options.steps or max(1, math.ceil(math.ceil(n_examples / per_step) * options.epochs))
    logging_steps = options.logging_steps or max(1, round(total / 25))
    return config_cls(
        output_dir=str(out_dir),
        max_steps=options.steps if options.steps else -1,
        num_train_epochs=options.epochs,
        learning_rate=lr,
        lr_scheduler_type=options.lr_scheduler,
        warmup_steps=options.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps (transformers >= 5)
        weight_decay=options.weight_decay,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_length=options.max_length,
        seed=options.seed,
        data_seed=options.seed,
        logging_steps=logging_steps,
        logging_first_step=True,
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        fp16=False,
        use_cpu=not cuda,
        activation_checkpointing=False,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=not options.progress,
        include_num_input_tokens_seen="non_padding",
        **extra,
    )


def quiet(trainer: Any, progress: bool) -> None:
    """Without a progress bar, also drop the callback that prints every log line."""
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)


def progress_bars(enabled: bool) -> None:
    """Show or hide the progress bars of ``datasets`` (tokenising) and ``transformers`` (loading, saving)."""
    import datasets
    from transformers.utils import logging as hf_logging

    if enabled:
        datasets.enable_progress_bars()
        hf_logging.enable_progress_bar()
    else:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()


def _loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    curve = []
    for entry in log_history:
        if "loss" in entry:
            curve.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()
                          if isinstance(v, int | float) and not k.startswith("train_")})
    return curve


def run_training(trainer: Any, options: TrainOptions) -> dict[str, Any]:
    """Train (with ``options.threads`` torch threads) and return the training figures.

    Returns:
        ``{"steps", "epochs", "loss_curve": [{"step", "loss", ...}], "first_loss", "last_loss",
        "train_tokens", "train_tokens_per_s", "train_runtime_s", "threads"}``; tokens are the
        non-padding input tokens the trainer counted (prompt and completion).
    """
    import warnings

    with torch_threads(options.threads) as threads, warnings.catch_warnings():
        # TRL 1.16 reads the attribute transformers 5 renamed to ``is_activation_checkpointing``
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        start = time.perf_counter()
        out = trainer.train()
        runtime = time.perf_counter() - start
    curve = _loss_curve(trainer.state.log_history)
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    return {
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "train_loss": round(float(out.training_loss), 6),
        "first_loss": curve[0]["loss"] if curve else None,
        "last_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
        "train_tokens": tokens,
        "train_tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
        "train_runtime_s": round(runtime, 3),
        "threads": threads,
    }


def save_student(model: Any, tokenizer: Any, out_dir: Path, generation_config: Any | None = None) -> None:
    """Save the trained model (safetensors) and tokenizer (with its chat template) in the Hugging
    Face format, with a generation config that samples (``do_sample: true``) and stops at the
    tokenizer's end token, so ``from_pretrained``, ``transformers serve`` and
    :class:`~distillery.backends.transformers_local.TransformersBackend` load it as the base model was."""
    import copy

    gen = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    gen.do_sample = True
    if tokenizer.eos_token_id is not None:
        gen.eos_token_id = tokenizer.eos_token_id if gen.eos_token_id is None else gen.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    model.generation_config = gen
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (atomically)."""
    from distillery.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def library_versions() -> dict[str, str]:
    """Versions of distillery, trl, transformers and torch (for provenance)."""
    import torch
    import transformers
    import trl

    from distillery import __version__

    return {"distillery": __version__, "trl": trl.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__}


def finish(
    method: str,
    student: str,
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    hyperparameters: dict[str, Any],
    figures: dict[str, Any],
    provenance: dict[str, Any] | None,
    generation_config: Any | None = None,
) -> dict[str, Any]:
    """Save the student, ``metrics.json`` and the model card ``README.md`` into ``out_dir``.

    Returns:
        The metrics (``method``, ``student``, ``out_dir``, ``hyperparameters``, the training
        ``figures`` of :func:`run_training`, ``wall_time_s``, ``device``, ``versions``,
        ``finished_at``, ``data``), as written to ``metrics.json``.
    """
    from distillery.records import utc_now
    from distillery.train.card import model_card

    save_student(model, tokenizer, out_dir, generation_config)
    metrics = {
        "method": method,
        "student": student,
        "out_dir": str(out_dir),
        **figures,
        "hyperparameters": hyperparameters,
        "data": (provenance or {}).get("data", {}),
        "versions": library_versions(),
        "finished_at": utc_now(),
    }
    if provenance and provenance.get("run_dir"):
        metrics["run_dir"] = provenance["run_dir"]
        metrics["recipe_hash"] = provenance.get("recipe_hash")
    write_json(out_dir / "metrics.json", metrics)
    from distillery.io.atomic import atomic_write_text

    atomic_write_text(out_dir / "README.md", model_card(method, student, hyperparameters, metrics, provenance))
    return metrics


def complete(
    method: str,
    student: str,
    trainer: Any,
    tokenizer: Any,
    options: TrainOptions,
    out_dir: Path,
    settings: dict[str, Any],
    provenance: dict[str, Any] | None,
    generation_config: Any,
    started: float,
    **counts: int,
) -> dict[str, Any]:
    """Train with :func:`run_training`, then :func:`finish`; the hyper-parameters recorded are
    ``settings`` (the method's own) and ``options`` as resolved (actual logging steps, threads, device).

    Args:
        started: ``time.perf_counter()`` when the method began (the wall time covers loading and training).
        **counts: data sizes for the metrics (``examples``, ``pairs``).
    """
    figures = run_training(trainer, options)
    device = resolve_device(options.device)
    figures.update(counts, device=device, wall_time_s=round(time.perf_counter() - started, 3))
    hyper = {
        "method": method,
        **settings,
        "steps": options.steps,
        "epochs": None if options.steps else options.epochs,
        "batch_size": options.batch_size,
        "grad_accum": options.grad_accum,
        "max_length": options.max_length,
        "lr_scheduler": options.lr_scheduler,
        "warmup_ratio": options.warmup_ratio,
        "weight_decay": options.weight_decay,
        "logging_steps": trainer.args.logging_steps,
        "seed": options.seed,
        "threads": figures["threads"],
        "device": device,
        "bf16": bool(trainer.args.bf16),
    }
    return finish(method, student, trainer.model, tokenizer, out_dir, hyper, figures, provenance, generation_config)
