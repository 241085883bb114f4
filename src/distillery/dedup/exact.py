"""``dedup: exact``: one record per normalised text.

Texts are NFKC-normalised, lower-cased and whitespace-collapsed, then hashed (sha1); the
first record with a hash is kept, later ones point at it. Memory: one 20-byte digest plus
the kept id per kept record.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import record_text
from distillery.registry import register
from distillery.text import normalize

_SPACE = re.compile(r"\s+")


def text_hash(text: str) -> bytes:
    """sha1 digest of ``text`` after normalisation (case, unicode forms, runs of whitespace).

    A lone surrogate (``"\\ud800"``, which a teacher's JSON may carry) is hashed as its code
    point (``surrogatepass``), so it neither fails nor collides with other text.
    """
    return hashlib.sha1(_SPACE.sub(" ", normalize(text)).strip().encode("utf-8", "surrogatepass")).digest()


@register("dedup")
class ExactDedupConfig(StageConfig):
    """Recipe entry of exact deduplication.

    Attributes:
        fields: the record text compared (see :func:`distillery.records.record_text`).
    """

    type: Literal["exact"] = "exact"
    fields: list[str] = ["prompt", "response"]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The text fields it reads."""
        return tuple(self.fields)

    def build(self, ctx: BuildContext) -> Stage:
        return ExactDedup(self)


class ExactDedup(Stage):
    """Rejects records whose normalised text equals that of an earlier kept record."""

    kind = "dedup"
    cost = 1.0
    stateful = True

    def __init__(self, config: ExactDedupConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self._seen: dict[bytes, str] = {}

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        local: dict[bytes, str] = {}
        checks = []
        for record in records:
            h = text_hash(record_text(record, self.config.fields))
            first = self._seen.get(h) or local.get(h)
            if first is not None:
                checks.append(Check(False, f"exact_duplicate: same text as {first}", {"duplicate_of": first}))
            else:
                local[h] = record["id"]
                checks.append(Check(True))
        return checks

    def commit(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._seen.setdefault(text_hash(record_text(record, self.config.fields)), record["id"])
