"""Training sets from a finished run directory: SFT / KD examples and DPO preference pairs.

A run directory (written by :class:`distillery.pipeline.runner.Pipeline`) holds
``accepted.parquet`` and ``rejected.parquet`` (records, see :mod:`distillery.records`),
``report.json``, ``recipe.yaml`` and the dataset card. Every example keeps the chat the
teacher saw (``record["prompt"]``) as the prompt and the candidate (``record["response"]``)
as the assistant's completion, in TRL's *conversational prompt-completion* format (the
records' own ``prompt`` and ``completion`` columns)::

    {"prompt": [{"role": "user", "content": "..."}],
     "completion": [{"role": "assistant", "content": "..."}]}
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillery.train.errors import NoTrainingDataError, RunDirError

# Columns a training set needs; ``seed`` (whose struct type varies by run) is never read.
RECORD_COLUMNS = ("id", "seed_id", "sample_index", "prompt", "response", "teacher", "accepted", "reject_stage",
                  "reject_reason", "verdicts", "chosen", "rejected")
"""The columns training reads (``chosen``/``rejected``: a preference strategy's own pairs, when present)."""

# Stage kinds whose rejections say "this answer is worse" (a wrong answer, a failed filter);
# duplicates and contaminated records are not worse answers and make no DPO pairs.
PREFERENCE_REJECT_KINDS = ("verify", "filter")


@dataclass
class RunData:
    """A finished run's records and metadata.

    Attributes:
        path: the run directory.
        accepted: accepted records (dicts with :data:`RECORD_COLUMNS`).
        rejected: rejected records (empty when ``rejected.parquet`` is absent).
        report: ``report.json`` (``{}`` when absent).
        recipe: the resolved ``recipe.yaml`` as a dict (``{}`` when absent).
    """

    path: Path
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher(self) -> str | None:
        """The recipe's ``teacher.model`` (as written, e.g. ``builtin:teacher``), ``None`` in curate mode."""
        teacher = self.recipe.get("teacher") or {}
        return teacher.get("model")

    @property
    def teacher_backend(self) -> str | None:
        """The recipe's ``teacher.backend`` (``openai`` or ``transformers``), ``None`` in curate mode."""
        teacher = self.recipe.get("teacher") or {}
        return teacher.get("backend")


def _read_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    if "prompt" not in names:  # a run written before distillery 0.1's prompt/completion columns:
        columns = [c for c in RECORD_COLUMNS if c in names] + (["messages"] if "messages" in names else [])
        records = pq.read_table(path, columns=columns).to_pylist()
        for r in records:  # its `messages` held the prompt alone
            r["prompt"] = r.pop("messages", None) or []
        return records
    return pq.read_table(path, columns=[c for c in RECORD_COLUMNS if c in names]).to_pylist()


def load_run(run_dir: str | Path) -> RunData:
    """Read a finished run directory.

    Raises:
        RunDirError: the folder does not exist or has no ``accepted.parquet`` (an unfinished run).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory not found")
    accepted_path = path / "accepted.parquet"
    if not accepted_path.exists():
        raise RunDirError(
            f"{path}: no accepted.parquet (not a finished run directory; run `distillery run RECIPE` to completion first)"
        )
    rejected_path = path / "rejected.parquet"
    report_path, recipe_path = path / "report.json", path / "recipe.yaml"
    return RunData(
        path=path,
        accepted=_read_records(accepted_path),
        rejected=_read_records(rejected_path) if rejected_path.exists() else [],
        report=json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {},
        recipe=yaml.safe_load(recipe_path.read_text(encoding="utf-8")) if recipe_path.exists() else {},
    )


def _messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"] or ""} for m in messages]


def as_prompt_completion(example: dict[str, Any]) -> dict[str, Any]:
    """One SFT example in TRL's conversational prompt-completion format.

    Accepts a run record (``prompt`` + ``response``) or ``{"prompt", "completion"}`` where the
    prompt is a list of chat messages (or a plain string, taken as one user message) and the
    completion a string (taken as the assistant's reply) or a list of assistant messages.

    Raises:
        KeyError: neither ``prompt``/``response`` nor ``prompt``/``completion`` is present.
    """
    if "prompt" in example and "response" in example:
        prompt, completion = example["prompt"], example["response"]
    elif "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
    else:
        raise KeyError(f"an SFT example needs prompt/completion or prompt/response keys, got {sorted(example)}")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    return {"prompt": _messages(prompt), "completion": _messages(completion)}


def _prompt_key(record: dict[str, Any]) -> str:
    """What makes two candidates answers to the same prompt: the messages sent."""
    return json.dumps(record.get("prompt") or [], sort_keys=True, ensure_ascii=False)


def _usable(record: dict[str, Any]) -> bool:
    return bool(record.get("prompt")) and bool((record.get("response") or "").strip())


def sft_examples(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion examples (see :func:`as_prompt_completion`) of the records that have a
    prompt and a non-empty response, in their order."""
    return [as_prompt_completion(r) for r in records if _usable(r)]


def require_accepted(run: RunData) -> list[dict[str, Any]]:
    """The accepted records of ``run`` that can be trained on.

    Raises:
        NoTrainingDataError: there are none.
    """
    usable = [r for r in run.accepted if _usable(r)]
    if not usable:
        raise NoTrainingDataError(
            f"{run.path}: no accepted records to train on (accepted.parquet has {len(run.accepted)} rows"
            f"{'' if not run.accepted else ', none with a prompt and a response'}; rejected: {len(run.rejected)})"
        )
    return usable


def reject_kind(record: dict[str, Any]) -> str | None:
    """The kind (``verify``, ``filter``, ``dedup``, ``decontaminate``, ``generate``, ``read``) of the
    stage whose verdict rejected ``record``, from its first failing verdict; ``None`` if none failed."""
    for verdict in record.get("verdicts") or []:
        if not verdict.get("passed"):
            return verdict.get("stage")
    return None


@dataclass
class PairStats:
    """How the DPO pairs of a run were built (all counts are records or prompts).

    Attributes:
        prompts: distinct ``seed_id`` among accepted and rejected records.
        prompts_with_accepted: prompts with at least one accepted candidate.
        prompts_with_pairs: prompts that gave at least one pair.
        pairs: preference pairs built.
        rejected_usable: rejected candidates with a response, rejected by a stage of ``reject_kinds``.
        rejected_skipped: other rejected records, by rejecting stage kind (``generate`` = generation failures).
    """

    prompts: int = 0
    prompts_with_accepted: int = 0
    prompts_with_pairs: int = 0
    pairs: int = 0
    rejected_usable: int = 0
    rejected_skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def dpo_pairs(
    accepted: Iterable[dict[str, Any]],
    rejected: Iterable[dict[str, Any]],
    pairs_per_prompt: int = 1,
    reject_kinds: tuple[str, ...] = PREFERENCE_REJECT_KINDS,
) -> tuple[list[dict[str, Any]], PairStats]:
    """Preference pairs for DPO (Rafailov et al., 2023) from one run's candidates.

    For each prompt (the messages sent, ``prompt``) with accepted candidates and rejected ones, the accepted
    candidate is *chosen* and the rejected one *rejected*; candidates are taken in
    ``sample_index`` order and zipped, up to ``pairs_per_prompt`` pairs per prompt. Only
    candidates rejected by a verifier or filter (kinds in ``reject_kinds``) and holding a
    response are used: generation failures, duplicates and contaminated records are not
    worse answers.

    An accepted record that carries its own pair (``chosen`` and ``rejected``, the
    :data:`~distillery.records.PREFERENCE_OUTPUTS` of a strategy that makes preference pairs:
    AI feedback, Constitutional AI, AutoIF) is that pair, as it is.

    Returns:
        ``(pairs, stats)``: pairs in TRL's conversational preference format
        ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}`` in prompt
        order of first appearance, and :class:`PairStats`.
    """
    stats = PairStats()
    good: dict[str, list[dict[str, Any]]] = defaultdict(list)
    bad: dict[str, list[dict[str, Any]]] = defaultdict(list)
    order: dict[str, int] = {}
    skipped: Counter = Counter()
    explicit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in accepted:
        key = _prompt_key(r)
        order.setdefault(key, len(order))
        if r.get("chosen") and r.get("rejected"):
            explicit[key].append({"prompt": _messages(r["prompt"]), "chosen": _messages(r["chosen"]),
                                  "rejected": _messages(r["rejected"])})
        elif _usable(r):
            good[key].append(r)
    for r in rejected:
        if r.get("seed_id") is None:
            skipped["read"] += 1
            continue
        key = _prompt_key(r)
        order.setdefault(key, len(order))
        kind = reject_kind(r) or "unknown"
        if kind in reject_kinds and _usable(r):
            bad[key].append(r)
            stats.rejected_usable += 1
        else:
            skipped[kind] += 1
    stats.prompts = len(order)
    stats.prompts_with_accepted = len(good.keys() | explicit.keys())
    stats.rejected_skipped = dict(skipped.most_common())
    pairs = []
    for sid in sorted(explicit.keys() | (good.keys() & bad.keys()), key=order.__getitem__):
        if sid in explicit:
            pairs.extend(explicit[sid][:pairs_per_prompt])
            stats.prompts_with_pairs += 1
            continue
        chosen = sorted(good[sid], key=lambda r: r.get("sample_index") or 0)
        worse = sorted(bad[sid], key=lambda r: r.get("sample_index") or 0)
        made = 0
        for c, w in zip(chosen, worse, strict=False):
            if made >= pairs_per_prompt:
                break
            pairs.append({
                "prompt": _messages(c["prompt"]),
                "chosen": [{"role": "assistant", "content": c["response"]}],
                "rejected": [{"role": "assistant", "content": w["response"]}],
            })
            made += 1
        stats.prompts_with_pairs += made > 0
    stats.pairs = len(pairs)
    return pairs, stats


def require_pairs(run: RunData, pairs_per_prompt: int = 1) -> tuple[list[dict[str, Any]], PairStats]:
    """The DPO pairs of ``run`` (see :func:`dpo_pairs`).

    Raises:
        NoTrainingDataError: no pair could be built; the message says why (counts of accepted
            and usable rejected candidates, and what was skipped).
    """
    pairs, stats = dpo_pairs(run.accepted, run.rejected, pairs_per_prompt)
    if not pairs:
        raise NoTrainingDataError(
            f"{run.path}: no DPO preference pairs: a pair needs an accepted and a verifier- or filter-rejected "
            f"candidate of the same prompt; found {stats.prompts_with_accepted} prompts with accepted candidates "
            f"and {stats.rejected_usable} usable rejected candidates (skipped rejections by stage kind: "
            f"{stats.rejected_skipped or 'none'}). Sample several candidates per prompt "
            "(generation.samples_per_prompt > 1, accept_per_prompt unset) to get pairs."
        )
    return pairs, stats
