"""``dedup: minhash``: reject records whose text is a near duplicate of an earlier kept one.

Near duplicate: Jaccard similarity of word 5-gram shingle sets ``>= threshold`` (0.8),
found with MinHash-LSH and confirmed by the exact Jaccard similarity; the engine, its
defaults and their reasons are in :mod:`distillery.dedup.neardup`. Speed on one (shared)
core for GSM8K-sized texts (``benchmarks/minhash.py``): about 40-50k records per second in
batches of 1000; each batch also costs about 1.5 ms of fixed overhead, so batches of 64
run at about 20k records per second.

Memory: about 1.4 KB per kept GSM8K-sized record (~105 words) with the exact check (LSH
table ~0.3 KB, 16-bit signature 0.26 KB, shingle set 8 bytes per word), 0.6 KB without.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distillery.dedup.neardup import NearDuplicateIndex, Sketch
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import record_text
from distillery.registry import register


@register("dedup")
class MinHashConfig(StageConfig):
    """Recipe entry of MinHash-LSH near-duplicate removal.

    Attributes:
        threshold: Jaccard similarity of word ``ngram`` shingle sets at or above which a
            record is a near duplicate of an earlier kept one.
        num_perm: MinHash signature length (accuracy of the estimate: about
            ``sqrt(J (1 - J) / num_perm)``).
        ngram: words per shingle.
        seed: hash seed.
        fields: the record text compared (see :func:`distillery.records.record_text`).
        verify_jaccard: confirm LSH candidates by exact Jaccard (needed for precision).
    """

    type: Literal["minhash"] = "minhash"
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    num_perm: int = Field(128, ge=1)
    ngram: int = Field(5, ge=1)
    seed: int = 1
    fields: list[str] = ["prompt", "response"]
    verify_jaccard: bool = True

    @property
    def inputs(self) -> tuple[str, ...]:
        """The text fields it reads."""
        return tuple(self.fields)

    def build(self, ctx: BuildContext) -> MinHashDedup:
        return MinHashDedup(self)


class MinHashDedup(Stage):
    """Rejects records whose text is a near duplicate of an earlier kept record.

    ``check_batch`` looks records up in the index of committed records and among the
    earlier passing records of the same batch, without changing the index; ``commit``
    indexes the records finally accepted (reusing the batch's sketch when it can).
    """

    kind = "dedup"
    cost = 5.0
    stateful = True

    def __init__(self, config: MinHashConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.index = NearDuplicateIndex(
            threshold=config.threshold,
            num_perm=config.num_perm,
            ngram=config.ngram,
            seed=config.seed,
            verify_jaccard=config.verify_jaccard,
        )
        self._last: tuple[dict[Any, int], list[str], Sketch] | None = None

    def _texts(self, records: list[dict[str, Any]]) -> list[str]:
        return [record_text(r, self.config.fields) for r in records]

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        texts = self._texts(records)
        ids = [r["id"] for r in records]
        sk = self.index.sketch(texts)
        matches = self.index.match(sk, ids)
        self._last = ({rid: row for row, rid in enumerate(ids)}, texts, sk)
        t = self.config.threshold
        checks = []
        for m in matches:
            if m is None:
                checks.append(Check(True))
                continue
            if m.jaccard is not None:
                reason = f"near_duplicate: jaccard {m.jaccard:.2f} >= {t} with {m.duplicate_of}"
            else:
                reason = f"near_duplicate: estimated jaccard {m.estimated:.2f} >= {t} with {m.duplicate_of}"
            detail = {
                "duplicate_of": m.duplicate_of,
                "jaccard": None if m.jaccard is None else round(m.jaccard, 4),
                "estimated": round(m.estimated, 4),
            }
            checks.append(Check(False, reason, detail))
        return checks

    def commit(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        texts = self._texts(records)
        ids = [r["id"] for r in records]
        rows = None
        if self._last is not None:
            where, last_texts, sk = self._last
            rows = [where.get(rid) for rid in ids]
            if any(r is None or last_texts[r] != text for r, text in zip(rows, texts, strict=True)):
                rows = None
        if rows is None:
            self.index.insert(texts, ids)
        else:
            self.index.insert(sk.take(rows), ids)
        self._last = None
