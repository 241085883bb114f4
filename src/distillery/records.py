"""The record: one candidate (or one rejected input row) and its provenance.

A record is a plain ``dict`` while it moves through the pipeline, so stages stay cheap
and users can read it without our classes. :data:`RECORD_FIELDS` lists the keys every
record carries once the pipeline has seen it; :func:`new_record` makes one with every key
present. The seed's own fields live under ``record["seed"]`` (a dict), so seed columns
never collide with ours.

Fields (Arrow type in brackets):

- ``id`` [string]: the seed's ``id`` field if it has one, else ``<seed_source_stem>-<seed_index>``;
  candidates add ``#<sample_index>`` so ids are unique per record.
- ``seed_id`` [string], ``seed_index`` [int64], ``seed_source`` [string]: where the seed came from.
- ``seed`` [struct]: the seed row's fields, as read.
- ``messages`` [list<struct<role, content>>]: the whole conversation: ``prompt`` followed by
  ``completion`` (TRL's conversational language-modelling format).
- ``prompt`` [list<struct<role, content>>]: the chat messages sent to the teacher (system,
  few-shot turns, user); ``completion`` [list<struct<role, content>>]: the assistant turn
  (``[]`` when there is no response). Together: TRL's prompt-completion format, so
  ``SFTTrainer`` trains on the assistant tokens only.
- ``response`` [string]: the candidate text (the teacher's completion, or the seed's own
  response in curate mode).
- ``teacher`` [string], ``backend`` [string]: model name and backend kind (``openai``,
  ``transformers``, ``seed`` in curate mode).
- ``strategy`` [string], ``strategy_params`` [string, JSON]: the generation strategy that made
  the record and its parameters; ``steps`` [list<struct>]: every intermediate call of the
  strategy before the one that produced ``response`` (``name``, ``prompt``, ``response``,
  ``tokens_in``, ``tokens_out``, ``cached``, ``finish_reason``; empty for one-call strategies).
- ``sampling`` [string, JSON]: the sampling parameters of the request.
- ``prompt_template_hash`` [string]: sha256 (first 16 hex) of the system prompt, template and few-shot.
- ``sample_index`` [int64]: which sample of this prompt (0-based); the cache key includes it.
- ``tokens_in``, ``tokens_out`` [int64]; ``latency_s`` [float64]; ``finish_reason`` [string];
  ``cached`` [bool]: whether the response came from the response cache.
- ``verdicts`` [list<struct<stage, name, passed, detail>>]: every check made, in order;
  ``detail`` is a JSON string.
- ``accepted`` [bool]; ``reject_stage`` [string]; ``reject_reason`` [string].
- ``distillery_version`` [string]; ``created_at`` [string, ISO 8601 UTC].
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import pyarrow as pa

from distillery import __version__

RECORD_FIELDS: tuple[str, ...] = (
    "id",
    "seed_id",
    "seed_index",
    "seed_source",
    "seed",
    "messages",
    "prompt",
    "completion",
    "response",
    "teacher",
    "backend",
    "strategy",
    "strategy_params",
    "steps",
    "sampling",
    "prompt_template_hash",
    "sample_index",
    "tokens_in",
    "tokens_out",
    "latency_s",
    "finish_reason",
    "cached",
    "verdicts",
    "accepted",
    "reject_stage",
    "reject_reason",
    "distillery_version",
    "created_at",
)

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
PREFERENCE_OUTPUTS: dict[str, pa.DataType] = {"chosen": pa.list_(MESSAGE_TYPE), "rejected": pa.list_(MESSAGE_TYPE)}
"""The output fields of a strategy that makes preference pairs (``Strategy.outputs``): ``chosen``
and ``rejected`` are assistant turns for the record's ``prompt`` (TRL's prompt/chosen/rejected
format); the record's ``completion`` is the chosen turn."""
VERDICT_TYPE = pa.struct(
    [("stage", pa.string()), ("name", pa.string()), ("passed", pa.bool_()), ("detail", pa.string())]
)
STEP_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("prompt", pa.list_(MESSAGE_TYPE)),
        ("response", pa.string()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("cached", pa.bool_()),
        ("finish_reason", pa.string()),
    ]
)

# Arrow types of every field but ``seed`` (whose struct type is inferred from the seeds).
FIXED_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "seed_id": pa.string(),
    "seed_index": pa.int64(),
    "seed_source": pa.string(),
    "messages": pa.list_(MESSAGE_TYPE),
    "prompt": pa.list_(MESSAGE_TYPE),
    "completion": pa.list_(MESSAGE_TYPE),
    "response": pa.string(),
    "teacher": pa.string(),
    "backend": pa.string(),
    "strategy": pa.string(),
    "strategy_params": pa.string(),
    "steps": pa.list_(STEP_TYPE),
    "sampling": pa.string(),
    "prompt_template_hash": pa.string(),
    "sample_index": pa.int64(),
    "tokens_in": pa.int64(),
    "tokens_out": pa.int64(),
    "latency_s": pa.float64(),
    "finish_reason": pa.string(),
    "cached": pa.bool_(),
    "verdicts": pa.list_(VERDICT_TYPE),
    "accepted": pa.bool_(),
    "reject_stage": pa.string(),
    "reject_reason": pa.string(),
    "distillery_version": pa.string(),
    "created_at": pa.string(),
}


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with seconds precision."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with every key of :data:`RECORD_FIELDS`, defaults filled, ``fields`` applied.

    ``messages`` and ``completion`` follow from ``prompt`` and ``response`` (see
    :func:`conversation`) unless given. Fields a strategy adds (its ``outputs``) are set on
    the dict afterwards.

    Raises:
        KeyError: a key of ``fields`` is not a record field.
    """
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise KeyError(f"not record fields: {sorted(unknown)}")
    record: dict[str, Any] = {
        "id": None,
        "seed_id": None,
        "seed_index": None,
        "seed_source": None,
        "seed": {},
        "messages": [],
        "prompt": [],
        "completion": [],
        "response": None,
        "teacher": None,
        "backend": None,
        "strategy": None,
        "strategy_params": None,
        "steps": [],
        "sampling": None,
        "prompt_template_hash": None,
        "sample_index": None,
        "tokens_in": None,
        "tokens_out": None,
        "latency_s": None,
        "finish_reason": None,
        "cached": False,
        "verdicts": [],
        "accepted": True,
        "reject_stage": None,
        "reject_reason": None,
        "distillery_version": __version__,
        "created_at": utc_now(),
    }
    record.update(fields)
    if "messages" not in fields and "completion" not in fields:
        record["completion"], record["messages"] = conversation(record["prompt"], record["response"])
    return record


def conversation(prompt: list[dict[str, str]], response: str | None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(completion, messages)`` of a prompt and its response: the assistant turn
    (``[]`` when ``response`` is ``None``) and the whole conversation."""
    completion = [] if response is None else [{"role": "assistant", "content": response}]
    return completion, [*prompt, *completion]


def add_verdict(record: dict[str, Any], stage: str, name: str, passed: bool, detail: dict | None = None) -> None:
    """Append a verdict to ``record["verdicts"]``; on failure mark the record rejected.

    The first failing verdict sets ``reject_stage`` (``name``) and ``reject_reason``
    (``detail["reason"]`` if given, else ``name``); later verdicts never overwrite it.
    """
    detail = dict(detail or {})
    record["verdicts"].append(
        {"stage": stage, "name": name, "passed": bool(passed), "detail": json.dumps(detail, default=str, sort_keys=True)}
    )
    if not passed and record["accepted"]:
        record["accepted"] = False
        record["reject_stage"] = name
        record["reject_reason"] = str(detail.get("reason") or name)


def verdict_detail(verdict: dict[str, Any]) -> dict[str, Any]:
    """The ``detail`` of a verdict decoded from its JSON string."""
    return json.loads(verdict["detail"]) if verdict.get("detail") else {}


def prompt_text(record: dict[str, Any]) -> str:
    """The content of the last user message of ``record["prompt"]`` ("" when none).

    In curate mode, where nothing is sent to a teacher, the prompt is still built from the
    prompt template, so this is the prompt the response answers.
    """
    for message in reversed(record.get("prompt") or []):
        if message.get("role") == "user":
            return message.get("content") or ""
    return ""


def record_text(record: dict[str, Any], fields: tuple[str, ...] | list[str] = ("prompt", "response")) -> str:
    """The text of ``record`` that a text stage should look at, fields joined by ``"\\n"``.

    Args:
        record: a pipeline record.
        fields: names among ``"prompt"`` (last user message), ``"response"``, ``"messages"``
            (every message's content but the response's: system, few-shot and user turns) and
            ``"seed.<field>"`` (a seed field).

    Raises:
        KeyError: an unknown field name, or a ``seed.<field>`` the seed lacks.
    """
    parts: list[str] = []
    for name in fields:
        if name == "prompt":
            parts.append(prompt_text(record))
        elif name == "response":
            parts.append(record.get("response") or "")
        elif name == "messages":
            parts.extend(m.get("content") or "" for m in record.get("prompt") or [])
        elif name.startswith("seed."):
            key = name[5:]
            if key not in record["seed"]:
                raise KeyError(f"seed has no field {key!r} (fields: {sorted(record['seed'])})")
            value = record["seed"][key]
            parts.append("" if value is None else str(value))
        else:
            raise KeyError(f"unknown text field {name!r}; use prompt, response, messages or seed.<field>")
    return "\n".join(parts)
