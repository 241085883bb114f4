"""The reproducible recipe of distillery's shipped ``teacher`` and ``student`` models.

Both are small Llama-architecture causal LMs (:func:`~distillery.builtin.modelling.build_llama`)
sharing one byte-level BPE tokenizer trained on ``arith`` train text. They learn supervised
fine-tuning (SFT) style, from scratch, to answer a question (one user message) with the gold
program (the assistant message, no code fences); the loss is on the program tokens and the
closing ``<|end|>`` only (completion-only loss). Training runs through ``transformers.Trainer``
on CPU. Only the ``train`` split is used (by construction it shares no 13-gram with ``test``).

The teacher gets enough training to be good but imperfect (most errors on long, 5-operation
problems); the student, a smaller model, sees a small gold subset for a few steps, so it
starts weak but above zero, leaving room for distillation and self-improvement.
"""

from __future__ import annotations

import json
import platform
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from distillery.builtin.arith import ArithProblem, generate
from distillery.builtin.modelling import END
from distillery.builtin.models import MODELS_DIR

#: How the shipped models are reproduced (recorded in the model cards).
REPRODUCE_COMMAND = "distillery builtin train --seed {seed}"


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: ``steps`` optimizer steps on fresh gold problems of ``difficulties``.

    Attributes:
        steps: optimizer steps of the stage (``steps * batch_size`` new problems).
        difficulties: difficulty cycle of the stage's problems (each listed level gets an
            equal share; repeat a level to weight it).
    """

    steps: int
    difficulties: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture, data and optimisation of one built-in model.

    Training follows a curriculum (Bengio et al., 2009): the stages run in order, each on
    problems never seen before, short problems first (short sequences are cheap on a CPU
    and teach the copy of numbers from question to program that the longer ones need).

    Attributes:
        name: folder name under the output folder (``teacher`` / ``student``).
        hidden, layers, heads, intermediate: Llama width, blocks, attention heads and MLP width.
        stages: the curriculum; stage ``k`` uses ``generate(steps * batch_size, split="train",
            seed=seed * 1000 + data_offset + k, difficulties=...)``.
        batch_size: sequences per optimizer step.
        learning_rate: peak AdamW learning rate (linear warmup over ``warmup_steps``, then
            cosine decay to 0 over all stages).
        weight_decay: AdamW decoupled weight decay; adam_beta2: AdamW's second-moment decay.
        data_offset: separates the data seeds of different models.
        init_seed_offset: added to the run seed for the weight initialisation.
        refine: stages of a second phase (annealing): training continues from the first
            phase's weights with a fresh optimizer, ``refine_warmup_steps`` warmup and cosine
            decay from ``refine_learning_rate``; stage ``k`` of it uses data seed
            ``stage_seed(seed, len(stages) + k)``.
    """

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    stages: tuple[Stage, ...]
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    adam_beta2: float = 0.98
    data_offset: int = 0
    init_seed_offset: int = 0
    refine: tuple[Stage, ...] = ()
    refine_learning_rate: float = 1e-3
    refine_warmup_steps: int = 50

    @property
    def steps(self) -> int:
        """Total optimizer steps (both phases)."""
        return sum(s.steps for s in (*self.stages, *self.refine))

    def phase(self, name: str) -> tuple[tuple[Stage, ...], int, float, int]:
        """``(stages, index of the first stage, peak learning rate, warmup steps)`` of phase
        ``"main"`` or ``"refine"``."""
        if name == "main":
            return self.stages, 0, self.learning_rate, self.warmup_steps
        if name == "refine":
            return self.refine, len(self.stages), self.refine_learning_rate, self.refine_warmup_steps
        raise ValueError(f"phase must be 'main' or 'refine', got {name!r}")

    def model_kwargs(self) -> dict[str, int]:
        """Keyword arguments of :func:`~distillery.builtin.modelling.build_llama`."""
        return {
            "hidden": self.hidden,
            "layers": self.layers,
            "heads": self.heads,
            "intermediate": self.intermediate,
            "max_positions": 512,
        }

    def stage_seed(self, seed: int, k: int) -> int:
        """The ``generate`` seed of stage ``k`` for run seed ``seed``."""
        return seed * 1000 + self.data_offset + k


TEACHER = ModelSpec(
    name="teacher", hidden=128, layers=4, heads=4, intermediate=384,
    stages=(Stage(1000, (1,)), Stage(1000, (1, 2)), Stage(5000, (1, 2, 3, 4, 5))),
    refine=(Stage(3000, (1, 2, 3, 4, 5, 5)),),
)
STUDENT = ModelSpec(
    name="student", hidden=96, layers=2, heads=4, intermediate=256,
    stages=(Stage(800, (1,)), Stage(400, (1, 2))), data_offset=100, init_seed_offset=1,
)
#: Tokenizer recipe: vocabulary size and the number of train problems it is fitted on.
VOCAB_SIZE = 2048
TOKENIZER_PROBLEMS = 4000


@dataclass
class TrainingRecipe:
    """Everything that determines the built-in models (the defaults are the shipped ones)."""

    seed: int = 0
    teacher: ModelSpec = TEACHER
    student: ModelSpec = STUDENT
    vocab_size: int = VOCAB_SIZE
    numbers: str = "digits"
    tokenizer_problems: int = TOKENIZER_PROBLEMS
    threads: int = 2
    logging_steps: int = 25
    eval_max_new_tokens: int = 192
    models: tuple[str, ...] = field(default=("teacher", "student"))

    @classmethod
    def quick(cls, seed: int = 0) -> TrainingRecipe:
        """A tiny configuration for smoke tests: a few steps on a few problems (seconds)."""
        return cls(
            seed=seed,
            teacher=ModelSpec(name="teacher", hidden=32, layers=1, heads=2, intermediate=64,
                              stages=(Stage(2, (1,)), Stage(1, (1, 2))), batch_size=8, warmup_steps=1,
                              refine=(Stage(2, (1, 2)),), refine_warmup_steps=1),
            student=ModelSpec(name="student", hidden=16, layers=1, heads=2, intermediate=32,
                              stages=(Stage(2, (1,)),), batch_size=8, warmup_steps=1, data_offset=100,
                              init_seed_offset=1),
            vocab_size=400,
            tokenizer_problems=40,
            logging_steps=1,
            eval_max_new_tokens=32,
        )


def encode_example(tokenizer: Any, question: str, program: str) -> dict[str, list[int]]:
    """Token ids of one SFT example and its labels, with the prompt masked out (``-100``).

    The sequence is the chat-template prompt (``<|user|>\\n{question}<|end|>\\n<|assistant|>\\n``)
    followed by ``{program}<|end|>``; labels equal the ids on the program and ``<|end|>`` and
    ``-100`` on the prompt, so the loss is on the completion only.
    """
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(program + END, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + completion_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt_ids) + completion_ids}


def train_problems(spec: ModelSpec, seed: int, phase: str = "main") -> list[list[ArithProblem]]:
    """The gold train problems of each stage of ``spec``'s ``phase`` (see :class:`ModelSpec`)."""
    stages, first, _, _ = spec.phase(phase)
    return [
        list(generate(st.steps * spec.batch_size, split="train", seed=spec.stage_seed(seed, first + k),
                      difficulties=st.difficulties))
        for k, st in enumerate(stages)
    ]


def batch_order(lengths: Sequence[int], batch_size: int, rng: random.Random, group: int = 32) -> list[int]:
    """A length-grouped order of ``len(lengths)`` examples: shuffle, sort each run of
    ``group * batch_size`` by length, cut into batches, shuffle the batches.

    Batches then hold similar lengths (less padding) while the data order stays random, as
    ``transformers``' ``LengthGroupedSampler`` does; here it is applied within a stage.
    """
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    span = group * batch_size
    for start in range(0, len(idx), span):
        chunk = sorted(idx[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


def build_tokenizer(recipe: TrainingRecipe) -> Any:
    """The shared tokenizer: byte-level BPE fitted on the questions and programs of the first
    ``recipe.tokenizer_problems`` train problems of ``recipe.seed`` (all difficulties)."""
    from distillery.builtin.modelling import train_tokenizer

    problems = generate(recipe.tokenizer_problems, split="train", seed=recipe.seed)
    return train_tokenizer((t for p in problems for t in (p.question, p.program)), vocab_size=recipe.vocab_size,
                           numbers=recipe.numbers)


def train_model(spec: ModelSpec, tokenizer: Any, seed: int, *, phase: str = "main", model: Any = None,
                logging_steps: int = 25, log: Callable[[str], None] = print,
                callbacks: Sequence[Any] = ()) -> tuple[Any, dict[str, Any]]:
    """Train ``spec``'s model on the gold train problems of one ``phase`` with ``transformers.Trainer``.

    Phase ``"main"`` builds the model from scratch (unless ``model`` is given); ``"refine"``
    continues ``model`` (required) on the refine stages with a fresh optimizer and schedule.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (e.g. to save snapshots).

    Returns:
        ``(model, info)``; ``info`` has ``phase``, ``steps``, ``parameters``, ``train_examples``,
        ``train_tokens`` (all tokens, prompt included), ``completion_tokens``, ``seconds`` and
        ``log`` (the Trainer's loss/learning-rate history, steps counted within the phase).

    Raises:
        ValueError: unknown phase, or ``"refine"`` without a model.
    """
    from transformers import (
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from distillery.builtin.modelling import build_llama

    stages, first, learning_rate, warmup_steps = spec.phase(phase)
    if phase == "refine" and model is None:
        raise ValueError("the refine phase continues a trained model; pass model=")
    steps = sum(st.steps for st in stages)
    examples = []
    for k, problems in enumerate(train_problems(spec, seed, phase)):
        stage = [encode_example(tokenizer, p.question, p.program) for p in problems]
        order = batch_order([len(e["input_ids"]) for e in stage], spec.batch_size,
                            random.Random(f"{seed}/{spec.name}/{first + k}"))
        examples += [stage[i] for i in order]
    if model is None:
        model = build_llama(tokenizer, seed=seed + spec.init_seed_offset, **spec.model_kwargs())
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{spec.name}] {phase} phase: {n_params:,} parameters, {len(examples)} examples, {steps} steps x {spec.batch_size}")

    class _Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                log(f"[{spec.name}] {phase} step {state.global_step}/{steps} loss {logs['loss']:.4f}")

    with tempfile.TemporaryDirectory(prefix="distillery-train-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=spec.batch_size,
            max_steps=steps,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=warmup_steps,
            weight_decay=spec.weight_decay,
            adam_beta2=spec.adam_beta2,
            max_grad_norm=1.0,
            logging_steps=logging_steps,
            save_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            use_cpu=True,
            train_sampling_strategy="sequential",  # the curriculum order built above
            dataloader_num_workers=0,
            disable_tqdm=True,
            log_level="warning",
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collator,
                          processing_class=tokenizer, callbacks=[_Progress(), *callbacks])
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    history = [
        {k: round(v, 5) if isinstance(v, float) else v for k, v in entry.items() if k in ("step", "loss", "learning_rate")}
        for entry in trainer.state.log_history if "loss" in entry
    ]
    model.eval()
    info = {
        "phase": phase,
        "steps": steps,
        "parameters": n_params,
        "train_examples": len(examples),
        "train_tokens": sum(len(e["input_ids"]) for e in examples),
        "completion_tokens": sum(sum(t != -100 for t in e["labels"]) for e in examples),
        "seconds": round(seconds, 1),
        "log": history,
    }
    log(f"[{spec.name}] {phase} phase trained in {seconds:.0f} s")
    return model, info


def combine_phases(phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ``info`` for a model trained in several phases: counts and seconds summed, the loss
    log concatenated with steps counted from the start of training, each phase kept in ``phases``."""
    log_rows, offset = [], 0
    for ph in phases:
        log_rows += [{**e, "step": e["step"] + offset, "phase": ph["phase"]} for e in ph["log"]]
        offset += ph["steps"]
    return {
        "parameters": phases[-1]["parameters"],
        "train_examples": sum(ph["train_examples"] for ph in phases),
        "train_tokens": sum(ph["train_tokens"] for ph in phases),
        "completion_tokens": sum(ph["completion_tokens"] for ph in phases),
        "seconds": round(sum(ph["seconds"] for ph in phases), 1),
        "log": log_rows,
        "phases": [{k: v for k, v in ph.items() if k != "log"} for ph in phases],
    }


def train_builtin_models(
    seed: int = 0,
    out_dir: str | Path = MODELS_DIR,
    *,
    recipe: TrainingRecipe | None = None,
    evaluate: bool = True,
    eval_problems: Sequence[ArithProblem] | None = None,
    sampled_eval: bool = True,
    main_phase_from: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the built-in teacher and student from scratch and save them with model cards.

    Steps: fit the shared tokenizer; train each model of ``recipe.models``; save it in the
    Hugging Face format under ``out_dir/<name>`` (``generation_config.do_sample`` true); if
    ``evaluate``, measure greedy accuracy per difficulty on ``eval_problems`` (default: the
    1000-problem ``test_set()``) and, for the teacher when ``sampled_eval``, accuracy of one
    sample at temperature 0.8; write ``README.md`` (the model card) and ``training.json``.

    Args:
        seed: seeds the data (``generate(split="train", seed=seed)``), the tokenizer data,
            the weight initialisation and the data order.
        out_dir: parent folder of ``teacher/`` and ``student/`` (the package's own by default).
        recipe: the configuration (default: the shipped one with ``seed``).
        main_phase_from: parent folder of models saved by an earlier run after their main
            phase (same seed and spec): models with refine stages start from there and run
            only the refine phase (saves the main phase's time; the result is the same
            training). Their ``training.json`` supplies the main phase's figures.

    Returns:
        ``{name: info}`` with parameter counts, training time, loss history and accuracies.

    Raises:
        ValueError: a ``main_phase_from`` model was trained with another seed or spec.
    """
    import torch

    from distillery.builtin.modelling import save_model

    recipe = replace(recipe, seed=seed) if recipe is not None else TrainingRecipe(seed=seed)
    torch.set_num_threads(recipe.threads)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    tokenizer = build_tokenizer(recipe)
    log(f"tokenizer: {len(tokenizer)} tokens")
    summary: dict[str, Any] = {}
    for spec in (recipe.teacher, recipe.student):
        if spec.name not in recipe.models:
            continue
        phases = []
        if main_phase_from is not None and spec.refine:
            model, main_info = _load_main_phase(Path(main_phase_from) / spec.name, spec, seed, log)
            phases.append(main_info)
        else:
            model, main_info = train_model(spec, tokenizer, seed, logging_steps=recipe.logging_steps, log=log)
            phases.append(main_info)
            if spec.refine and evaluate:
                main_info["eval"] = _evaluate(save_model(model, tokenizer, out_dir / spec.name), recipe,
                                              eval_problems, False, log)
        if spec.refine:
            model, refine_info = train_model(spec, tokenizer, seed, phase="refine", model=model,
                                             logging_steps=recipe.logging_steps, log=log)
            phases.append(refine_info)
        info = combine_phases(phases)
        folder = save_model(model, tokenizer, out_dir / spec.name)
        info.update(spec=asdict(spec), seed=seed, vocab_size=len(tokenizer), torch=torch.__version__,
                    threads=recipe.threads, machine=platform.processor() or platform.machine())
        summary[spec.name] = info
        del model
        if evaluate:
            info["eval"] = _evaluate(folder, recipe, eval_problems, sampled_eval and spec.name == "teacher", log)
        _write_card(folder, spec, recipe, info)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return summary


def _load_main_phase(folder: Path, spec: ModelSpec, seed: int, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """The model and main-phase ``info`` saved in ``folder`` by a run of the same seed and spec."""
    from transformers import AutoModelForCausalLM

    saved = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    main = (saved.get("phases") or [saved])[0]
    saved_spec = saved.get("spec", {})
    same = (saved.get("seed") == seed and saved_spec.get("stages") == json.loads(json.dumps([asdict(st) for st in spec.stages]))
            and all(saved_spec.get(k) == getattr(spec, k) for k in ("hidden", "layers", "heads", "intermediate",
                                                                    "learning_rate", "batch_size")))
    if not same:
        raise ValueError(f"{folder}: its main phase was trained with another seed or spec; cannot continue it")
    if "phases" in saved:
        raise ValueError(f"{folder}: already has its refine phase; point at the main phase's output")
    model = AutoModelForCausalLM.from_pretrained(folder)
    info = {k: v for k, v in main.items() if k not in ("spec", "seed", "vocab_size", "torch", "threads", "machine")}
    info.update(phase="main", steps=sum(st.steps for st in spec.stages), loaded_from=str(folder))
    log(f"[{spec.name}] main phase loaded from {folder} (trained there in {info['seconds']:.0f} s)")
    return model, info


def _evaluate(folder: Path, recipe: TrainingRecipe, problems: Sequence[ArithProblem] | None,
              sampled: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from distillery.builtin.arith import test_set
    from distillery.evaluate.arith import evaluate_arith

    problems = list(problems) if problems is not None else test_set()
    results: dict[str, Any] = {}
    runs = [("greedy", 0.0)] + ([("sampled_t0.8", 0.8)] if sampled else [])
    for label, temperature in runs:
        start = time.perf_counter()
        res = evaluate_arith(str(folder), problems, temperature=temperature, seed=recipe.seed,
                             max_new_tokens=recipe.eval_max_new_tokens)
        res.pop("problems")
        res["seconds"] = round(time.perf_counter() - start, 1)
        per = ", ".join(f"d{d} {v['accuracy']:.3f}" for d, v in res["per_difficulty"].items())
        log(f"[{folder.name}] {label}: {res['accuracy']:.3f} ({per}) in {res['seconds']:.0f} s")
        results[label] = res
    return results


def _accuracy_table(evals: dict[str, Any]) -> list[str]:
    levels = sorted({d for res in evals.values() for d in res["per_difficulty"]})
    lines = ["| decoding | " + " | ".join(f"d{d}" for d in levels) + " | all |",
             "|---" * (len(levels) + 2) + "|"]
    for label, res in evals.items():
        cells = [f"{res['per_difficulty'][d]['accuracy']:.1%}" if d in res["per_difficulty"] else "-" for d in levels]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {res['accuracy']:.1%} |")
    n = next(iter(evals.values()))["n_problems"]
    lines.append("")
    lines.append(f"On {n} held-out `test_set()` problems ({n // max(len(levels), 1)} per difficulty), one response each, "
                 "executed in the sandbox and compared with `answers_match` (the `python_program` verifier's rules).")
    return lines


def _thin(rows: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most about ``most`` evenly spaced rows of a log, the last one always included."""
    every = max(1, -(-len(rows) // most))
    return [r for i, r in enumerate(rows) if i % every == 0 or i == len(rows) - 1]


def _write_card(folder: Path, spec: ModelSpec, recipe: TrainingRecipe, info: dict[str, Any]) -> None:
    """Write ``README.md`` (model card) and ``training.json`` into ``folder``."""
    role = {
        "teacher": "the built-in **teacher**: good but imperfect at writing the program for an `arith` question "
                   "(most of its errors are on long, 5-operation problems), so the verifier has real work to do.",
        "student": "the built-in **student**: a smaller model trained briefly on a small gold subset, so it starts "
                   "weak but above zero; distillation from the teacher's verified samples and self-improvement "
                   "(STaR) are meant to raise it.",
    }.get(spec.name, f"built-in model `{spec.name}`.")
    lines = [
        f"# distillery built-in `{spec.name}`",
        "",
        f"This is {role}",
        "",
        "## Use",
        "",
        "Prompt: one user message holding the question, with the chat template "
        "(`<|user|>\\n{question}<|end|>\\n<|assistant|>\\n`). The model answers with a Python program "
        "defining `solution()` (no code fences), ending with `<|end|>`.",
        "",
        "```python",
        "from distillery.builtin.arith import test_set",
        "from distillery.evaluate.arith import evaluate_arith",
        f"evaluate_arith(\"builtin:{spec.name}\", test_set())",
        "```",
        "",
        "## Architecture",
        "",
        f"Llama (`LlamaForCausalLM`), hidden {spec.hidden}, {spec.layers} layers, {spec.heads} heads, "
        f"MLP {spec.intermediate}, tied embeddings, RoPE, context 512; **{info['parameters']:,} parameters**; "
        f"byte-level BPE tokenizer with {info['vocab_size']} tokens (shared by teacher and student). "
        "Weights in float32 safetensors.",
        "",
        "## Data",
        "",
        f"{info['train_examples']:,} gold problems from `distillery.builtin.arith`'s train split (which shares no "
        "word 13-gram with the test set, by construction; the test split is never trained on), in a curriculum "
        "of stages run in order, each on new problems:",
        "",
        "| phase | stage | steps | problems | difficulties | source |",
        "|---|---|---|---|---|---|",
        *(f"| {'main' if k < len(spec.stages) else 'refine'} | {k + 1} | {st.steps} | {st.steps * spec.batch_size:,} "
          f"| {', '.join(map(str, sorted(set(st.difficulties))))} "
          f"| `generate({st.steps * spec.batch_size}, split=\"train\", seed={spec.stage_seed(recipe.seed, k)}, "
          f"difficulties={tuple(st.difficulties)})` |" for k, st in enumerate((*spec.stages, *spec.refine))),
        "",
        f"- Tokenizer fitted on the questions and programs of `generate({recipe.tokenizer_problems}, "
        f"split=\"train\", seed={recipe.seed})`, vocabulary {recipe.vocab_size}"
        + f", numbers pre-tokenized as `{recipe.numbers!r}` (see `train_tokenizer`).",
        f"- {info['train_tokens']:,} tokens, of which {info['completion_tokens']:,} are program tokens carrying the "
        "loss (completion-only loss: the prompt is masked).",
        "",
        "## Training",
        "",
        f"`transformers.Trainer` on CPU ({recipe.threads} threads, torch {info['torch']}): {sum(st.steps for st in spec.stages)} steps of "
        f"{spec.batch_size} sequences (length-grouped batches within each stage), AdamW, peak learning rate {spec.learning_rate}, "
        f"{spec.warmup_steps} warmup steps then cosine decay, weight decay {spec.weight_decay}, gradient clipping 1.0, "
        f"seed {recipe.seed} (initialisation seed {recipe.seed + spec.init_seed_offset}). "
        + (f"Then a refine phase (annealing) continues from those weights: {sum(st.steps for st in spec.refine)} steps "
           f"on new problems weighted to the hard levels, fresh AdamW, peak learning rate {spec.refine_learning_rate}, "
           f"{spec.refine_warmup_steps} warmup steps then cosine decay. " if spec.refine else "")
        + f"Training took {info['seconds']:.0f} s on a shared 2-core machine"
        + (" (" + ", ".join(f"{ph['phase']} {ph['seconds']:.0f} s" for ph in info.get("phases", [])) + ")."
           if len(info.get("phases", [])) > 1 else "."),
        "",
        *(["The shipped weights were made in two commands: the main phase, then the refine phase continued from "
           "its saved output (`--main-phase-from`, same seed and spec; the training is the same as one run)."]
          if any(ph.get("loaded_from") for ph in info.get("phases", [])) else []),
        "",
        "Reproduce (teacher and student, then this card's figures):",
        "",
        "```",
        REPRODUCE_COMMAND.format(seed=recipe.seed),
        "```",
        "",
        "Loss (mean cross-entropy per program token, nats) by step:",
        "",
        "| step | loss | learning rate |",
        "|---|---|---|",
        *(f"| {e['step']} | {e['loss']:.4f} | {e.get('learning_rate', 0):.2e} |" for e in _thin(info["log"], 40)),
        "",
    ]
    if info.get("eval"):
        lines += ["## Accuracy on the held-out test set", "", *_accuracy_table(info["eval"]), ""]
    main_eval = next((ph.get("eval") for ph in info.get("phases", []) if ph["phase"] == "main" and ph.get("eval")), None)
    if main_eval and spec.refine:
        lines += ["After the main phase alone (before refining):", "", *_accuracy_table(main_eval)[:-2], ""]
    lines += [
        "## Limitations",
        "",
        "A toy: it only knows the `arith` templates and their vocabulary; it is there so that "
        "distillery's whole loop (generate, verify, filter, distill, evaluate) runs on a laptop without downloads.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
    (folder / "training.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
