"""Turning seeds and backend results into records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from distillery.backends.base import GenerationResult, SamplingParams
from distillery.io.seeds import BadRow, SeedRow
from distillery.records import add_verdict, new_record


@dataclass
class PromptItem:
    """A seed made into a prompt: the seed row, its id and its chat messages."""

    row: SeedRow
    seed_id: str
    messages: list[dict[str, str]]


def seed_id(row: SeedRow, id_field: str | None, source_name: str) -> str:
    """The seed's own id (``id_field``) if present, else ``<source>-<index>``."""
    if id_field and row.data.get(id_field) is not None:
        return str(row.data[id_field])
    return f"{source_name}-{row.index}"


def bad_row_record(bad: BadRow, source: str, source_name: str) -> dict[str, Any]:
    """A rejected record for a row that could not be read, keeping the raw text and the reason."""
    where = f"line {bad.line}" if bad.line is not None else f"row {bad.index}"
    record = new_record(
        id=f"{source_name}-{bad.index}",
        seed_id=f"{source_name}-{bad.index}",
        seed_index=bad.index,
        seed_source=source,
        seed={"_raw": bad.raw} if bad.raw is not None else {},
    )
    category, _, text = bad.reason.partition(":")
    add_verdict(record, "read", "read", False, {"reason": f"{category}: {where}: {text.strip()}", "field": bad.field})
    return record


def candidate_record(
    item: PromptItem,
    source: str,
    teacher: str,
    backend: str,
    sampling: SamplingParams,
    template_hash: str,
    sample_index: int,
    result: GenerationResult,
) -> dict[str, Any]:
    """A record for one generated candidate; failed (permanently: HTTP 4xx), refused, empty and
    truncated results are rejected at stage ``generate`` with their reason (``<error_kind>: ...``,
    ``content_filter``, ``empty_response``, ``truncated``)."""
    record = new_record(
        id=f"{item.seed_id}#{sample_index}",
        seed_id=item.seed_id,
        seed_index=item.row.index,
        seed_source=source,
        seed=item.row.data,
        prompt=item.messages,
        response=result.text,
        teacher=teacher,
        backend=backend,
        sampling=json.dumps(sampling.to_dict(), sort_keys=True),
        prompt_template_hash=template_hash,
        sample_index=sample_index,
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        latency_s=round(result.latency_s, 4),
        finish_reason=result.finish_reason,
        cached=result.cached,
    )
    detail: dict[str, Any] = {"finish_reason": result.finish_reason, "retries": result.retries}
    if result.error_kind is not None:
        detail["reason"] = f"{result.error_kind}: {result.error}"
        add_verdict(record, "generate", "generate", False, detail)
    elif result.finish_reason == "content_filter":
        detail["reason"] = "content_filter: the server withheld the response under its content policy"
        add_verdict(record, "generate", "generate", False, detail)
    elif not (result.text or "").strip():
        detail["reason"] = "empty_response: the teacher returned no text"
        add_verdict(record, "generate", "generate", False, detail)
    elif result.finish_reason == "length":
        detail["reason"] = f"truncated: cut off at max_tokens={sampling.max_tokens}"
        add_verdict(record, "generate", "generate", False, detail)
    return record


def curated_record(item: PromptItem, source: str, response: str | None, template_hash: str) -> dict[str, Any]:
    """A record whose response comes from the seed itself (curate mode); empty responses are rejected."""
    record = new_record(
        id=item.seed_id,
        seed_id=item.seed_id,
        seed_index=item.row.index,
        seed_source=source,
        seed=item.row.data,
        prompt=item.messages,
        response=None if response is None else str(response),
        teacher=None,
        backend="seed",
        prompt_template_hash=template_hash,
        sample_index=0,
    )
    if not (record["response"] or "").strip():
        add_verdict(record, "generate", "curate", False, {"reason": "empty_response: the seed's response is empty"})
    return record
