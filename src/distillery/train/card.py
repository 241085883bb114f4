"""The model card: a ``README.md`` in the Hugging Face model-card format (YAML metadata, then
prose) naming the training data, its provenance, the method and its hyper-parameters, in the
spirit of "Model Cards for Model Reporting" (Mitchell et al., 2019)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

METHOD_TEXT = {
    "sft": (
        "supervised fine-tuning on the teacher's accepted responses (response distillation, sequence-level KD; "
        "Kim & Rush, 2016), loss on the completion tokens only, with TRL's `SFTTrainer`"
    ),
    "kd": (
        "token-level knowledge distillation from the teacher's next-token distribution (Hinton et al., 2015) with the "
        "generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024): forward KL (beta=0), reverse KL "
        "(beta=1, as in MiniLLM, Gu et al., 2024) or JSD(beta) in between, on the run's responses (off-policy) and, "
        "with probability lmbda per step, on the student's own samples (on-policy), with TRL's `GKDTrainer`"
    ),
    "dpo": (
        "direct preference optimization (Rafailov et al., 2023) on pairs of an accepted (chosen) and a verifier- or "
        "filter-rejected (rejected) candidate of the same prompt, with TRL's `DPOTrainer`"
    ),
}


def _base_model(student: str) -> str | None:
    """The Hub id of the student, or ``None`` for built-in and local models."""
    if student.startswith("builtin:") or Path(student).expanduser().exists() or student.startswith((".", "/", "~")):
        return None
    return student


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def model_card(
    method: str,
    student: str,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    provenance: dict[str, Any] | None = None,
) -> str:
    """Markdown text of the model card of a trained student.

    Args:
        method: ``sft``, ``kd`` or ``dpo``.
        student: the base model's name as given (``builtin:student``, a folder or a Hub id).
        hyperparameters: the method's settings and :class:`~distillery.train.common.TrainOptions`.
        metrics: the ``metrics.json`` content (steps, losses, tokens/s, wall time...).
        provenance: where the data came from: ``run_dir``, ``recipe_name``, ``recipe_hash``, ``report``
            (report.json figures), ``teacher``, ``data`` (example or pair counts); ``None`` for data
            given directly (not a run directory).
    """
    prov = provenance or {}
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["distillery", "distillation", "trl", method],
    }
    base = _base_model(student)
    if base:
        meta["base_model"] = base
    title = Path(str(metrics.get("out_dir") or "student")).name
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {title}", ""]
    lines += [
        f"A student model trained by distillery {metrics.get('versions', {}).get('distillery', '')} from `{student}` "
        f"by {METHOD_TEXT[method]}.",
        "",
        "## Training data",
        "",
    ]
    if prov.get("run_dir"):
        report = prov.get("report") or {}
        lines.append(
            f"- **Dataset**: the run directory `{prov['run_dir']}` (recipe `{prov.get('recipe_name') or '?'}`, "
            f"recipe hash `{prov.get('recipe_hash') or '?'}`); its dataset card is the `README.md` there."
        )
        if report:
            lines.append(
                f"- **Run figures** (report.json): mode {report.get('mode', '?')}, {report.get('seeds', '?')} seeds, "
                f"{report.get('candidates', '?')} candidates, {report.get('accepted', '?')} accepted "
                f"(accept rate {report.get('accept_rate', '?')}), {report.get('rejected', '?')} rejected; "
                f"teacher `{(report.get('teacher') or {}).get('model', 'none (curated)')}`."
            )
    else:
        lines.append("- **Dataset**: examples passed directly through the Python API (no run directory).")
    data = prov.get("data") or {}
    if data:
        lines.append("- **Used for training**: " + ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in data.items()
                                                             if not isinstance(v, dict)) + ".")
    if prov.get("teacher"):
        lines.append(f"- **Teacher (token distributions)**: `{prov['teacher']}`.")
    lines += ["", "## Hyper-parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in hyperparameters.items()]
    lines += [
        "",
        "## Training results",
        "",
        f"- steps {metrics.get('steps')}, epochs {metrics.get('epochs')}, examples {metrics.get('examples')}",
        f"- loss: first logged {_fmt(metrics.get('first_loss'))}, last logged {_fmt(metrics.get('last_loss'))}, "
        f"mean over training {_fmt(metrics.get('train_loss'))}",
        f"- {metrics.get('train_tokens')} training tokens at {_fmt(metrics.get('train_tokens_per_s'))} tokens/s "
        f"({metrics.get('device')}, {metrics.get('threads')} threads); wall time {_fmt(metrics.get('wall_time_s'))} s",
        "",
        "The loss curve (every logged step) is in `metrics.json`.",
        "",
        "## Provenance",
        "",
        f"- trained on {metrics.get('finished_at')} with "
        + ", ".join(f"{k} {v}" for k, v in (metrics.get("versions") or {}).items()),
        f"- base model `{student}`; seed {hyperparameters.get('seed')}",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'tok = AutoTokenizer.from_pretrained("{title}")',
        f'model = AutoModelForCausalLM.from_pretrained("{title}")',
        'ids = tok.apply_chat_template([{"role": "user", "content": "..."}], add_generation_prompt=True, '
        'return_tensors="pt", return_dict=True)["input_ids"]',
        "print(tok.decode(model.generate(ids, max_new_tokens=256)[0, ids.shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        "## Limitations",
        "",
        "- The student learns what the verifiers and filters let through, including the teacher's errors they missed.",
        "- Figures above are training figures; measure held-out accuracy with the same verifiers before use.",
        "",
    ]
    return "\n".join(lines)
