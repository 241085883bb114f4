"""The decontamination stage: reject records whose text overlaps an evaluation benchmark.

Recipe entry (``decontamination:``)::

    decontamination:
      type: ngram            # or "substring" (GPT-4 report's 50-char check)
      ngram: 13
      benchmarks:
        - gsm8k_test
        - math500
        - {path: data/my_eval.jsonl, text_fields: [question], id_field: qid}
      fields: [prompt, response]
      min_hits: 1

A record is rejected when at least ``min_hits`` distinct windows of its text (n-grams, or
sampled substrings) are found in the benchmarks, with a reason such as
``"contaminated: 13-gram overlap with gsm8k_test/gsm8k-test-17"`` and the hits in the
verdict's detail.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distillery import registry
from distillery.decontaminate.benchmarks import load_benchmark, read_benchmark_file
from distillery.decontaminate.index import ContaminationIndex, Hit, Matches, NgramIndex, SubstringIndex
from distillery.errors import RecipeError
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import record_text
from distillery.registry import register

MAX_DETAIL_HITS = 20
"""Hits kept in a verdict's detail (``hits_total`` gives the full count)."""
MAX_DETAIL_CHARS = 200
"""Characters of a hit's text kept in a verdict's detail (``span`` gives the exact offsets)."""


class BenchmarkFile(BaseModel):
    """A benchmark read from a file named in the recipe.

    Attributes:
        path: JSONL, JSONL.gz or Parquet file; relative paths are resolved against the
            recipe's folder.
        text_fields: fields whose values, joined by newlines, are an item's text.
        id_field: field with the item id; default ``<name>-<row>``.
        name: the benchmark's name in hits and reasons; default the file name without suffixes.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    text_fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    id_field: str | None = None
    name: str | None = None


@register("decontamination")
class DecontaminationConfig(StageConfig):
    """Recipe entry of the decontamination stage.

    Attributes:
        type: ``"ngram"`` (word n-gram overlap, GPT-3 paper appendix C) or ``"substring"``
            (three random 50-character substrings per benchmark item, GPT-4 Technical
            Report appendix C).
        benchmarks: registered names (``gsm8k_test``, ``math500``, ``humaneval``, and any
            added with :func:`~distillery.decontaminate.benchmarks.register_benchmark`)
            or :class:`BenchmarkFile` entries.
        ngram: n-gram length in words for ``type: ngram``.
        substring_length, substring_samples, seed: the substring method's parameters.
        fields: record text to check (see :func:`distillery.records.record_text`).
        min_hits: matched windows needed to reject a record.
    """

    type: Literal["ngram", "substring"] = "ngram"
    benchmarks: list[str | BenchmarkFile] = Field(
        default_factory=lambda: ["gsm8k_test", "math500"], min_length=1
    )
    ngram: int = Field(13, ge=1)
    substring_length: int = Field(50, ge=1)
    substring_samples: int = Field(3, ge=1)
    seed: int = 0
    fields: list[str] = Field(default_factory=lambda: ["prompt", "response"], min_length=1)
    min_hits: int = Field(1, ge=1)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in ("prompt", "response", "messages") and not (
                name.startswith("seed.") and len(name) > 5
            ):
                raise ValueError(
                    f"unknown text field {name!r}; use prompt, response, messages or seed.<field>"
                )
        return value

    @property
    def inputs(self) -> tuple[str, ...]:
        """The text fields it reads."""
        return tuple(self.fields)

    @property
    def stage_name(self) -> str:
        """The stage's name: ``name`` if given, else ``decontaminate`` (one stage, whichever method)."""
        return self.name or "decontaminate"

    def build(self, ctx: BuildContext | None = None) -> DecontaminationStage:
        """Build the benchmark index (cached in-process for built-in names) and the stage.

        Raises:
            RecipeError: an unknown benchmark name, or a benchmark file that is missing or unreadable.
        """
        return DecontaminationStage(build_index(self, ctx or BuildContext()), self, name=self.stage_name)

    def new_index(self) -> ContaminationIndex:
        """An empty index of this entry's method and parameters."""
        if self.type == "ngram":
            return NgramIndex(self.ngram)
        return SubstringIndex(self.substring_length, self.substring_samples, self.seed)


_INDEX_CACHE: dict[tuple, ContaminationIndex] = {}


def build_index(config: DecontaminationConfig, ctx: BuildContext) -> ContaminationIndex:
    """The frozen index over ``config.benchmarks``.

    Indexes made only of registered benchmarks are cached in-process, keyed by the
    method, its parameters, the names and the registry's version; indexes that include a
    file are built afresh each time.

    Raises:
        RecipeError: an unknown benchmark name, or a benchmark file that is missing or unreadable.
    """
    for entry in config.benchmarks:
        if isinstance(entry, str) and entry not in registry.names("benchmark"):
            raise RecipeError(f"decontamination: {registry.unknown_message('benchmark', entry)}")
    only_names = all(isinstance(e, str) for e in config.benchmarks)
    key: tuple | None = None
    if only_names:
        params = (
            (config.ngram,)
            if config.type == "ngram"
            else (config.substring_length, config.substring_samples, config.seed)
        )
        key = (config.type, params, tuple(config.benchmarks), registry.version())
        if key in _INDEX_CACHE:
            return _INDEX_CACHE[key]
    index = config.new_index()
    for entry in config.benchmarks:
        if isinstance(entry, str):
            index.add_items(entry, load_benchmark(entry))
        else:
            path = ctx.resolve(entry.path)
            items = read_benchmark_file(path, entry.text_fields, entry.id_field, entry.name)
            index.add_items(entry.name or path.name.split(".")[0], items)
    index.freeze()
    if key is not None:
        _INDEX_CACHE[key] = index
    return index


class DecontaminationStage(Stage):
    """Rejects records whose text overlaps a benchmark (see :class:`DecontaminationConfig`).

    Verdict detail: ``matched`` (windows found), and when there are hits ``hits`` (up to
    :data:`MAX_DETAIL_HITS` of ``{benchmark, item_id, span: [start, end], text, ngram}``,
    offsets into the checked text, which is the record's ``fields`` joined by newlines)
    and ``hits_total``.

    Args:
        index: a frozen benchmark index.
        config: the recipe entry (``fields``, ``min_hits``).
        name: the stage's name.
    """

    kind = "decontaminate"
    cost = 3

    def __init__(
        self, index: ContaminationIndex, config: DecontaminationConfig, name: str | None = None
    ) -> None:
        super().__init__(name or config.stage_name)
        self.index = index
        self.fields = list(config.fields)
        self.min_hits = config.min_hits

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        """Check the records' texts in one vectorised call of the index."""
        matches = self.index.find([record_text(r, self.fields) for r in records])
        return [self._check(m) for m in matches]

    def check(self, record: dict[str, Any]) -> Check:
        """Check one record (:meth:`check_batch` of one)."""
        return self.check_batch([record])[0]

    def _check(self, matches: Matches) -> Check:
        detail: dict[str, Any] = {"matched": matches.matched}
        if matches.hits:
            detail["hits"] = [_hit_detail(h) for h in matches.hits[:MAX_DETAIL_HITS]]
            detail["hits_total"] = len(matches.hits)
        if matches.matched < self.min_hits:
            return Check(True, detail=detail)
        return Check(False, reason=self._reason(matches.hits), detail=detail)

    def _reason(self, hits: list[Hit]) -> str:
        per_item: dict[tuple[str, str], int] = {}
        for h in hits:
            per_item[(h.benchmark, h.item_id)] = per_item.get((h.benchmark, h.item_id), 0) + h.count
        (benchmark, item_id), _ = max(per_item.items(), key=lambda kv: kv[1])
        more = f" (+{len(per_item) - 1} more)" if len(per_item) > 1 else ""
        return f"contaminated: {self.index.label} with {benchmark}/{item_id}{more}"


def _hit_detail(hit: Hit) -> dict[str, Any]:
    text = hit.text if len(hit.text) <= MAX_DETAIL_CHARS else hit.text[: MAX_DETAIL_CHARS - 1] + "…"
    return {
        "benchmark": hit.benchmark,
        "item_id": hit.item_id,
        "span": [hit.start, hit.end],
        "text": text,
        "ngram": hit.ngram,
    }
