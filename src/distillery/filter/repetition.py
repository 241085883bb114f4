"""``filters: repetition``: reject degenerate, looping responses.

The measure is the share of word n-grams that are repeats of an earlier n-gram of the
same text, the "duplicate n-gram fraction" of Gopher's quality filters (Rae et al., 2021,
appendix A): ``1 - distinct / total`` over word n-grams.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.registry import register
from distillery.text import word_ngrams, words


def repeated_ngram_ratio(text: str, n: int) -> float:
    """Fraction in [0, 1] of the word n-grams of ``text`` that repeat an earlier one (0 if none)."""
    grams = list(word_ngrams(words(text), n))
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@register("filter")
class RepetitionConfig(StageConfig):
    """Recipe entry of the repetition filter.

    Attributes:
        n: n-gram size in words.
        max_ratio: most repeated n-gram fraction allowed.
        min_ngrams: texts with fewer n-grams than this always pass (too short to judge).
    """

    type: Literal["repetition"] = "repetition"
    n: int = Field(3, ge=1)
    max_ratio: float = Field(0.3, ge=0, le=1)
    min_ngrams: int = 10

    def build(self, ctx: BuildContext) -> Stage:
        return RepetitionFilter(self)


class RepetitionFilter(Stage):
    """Rejects responses whose repeated n-gram ratio exceeds ``max_ratio``."""

    kind = "filter"
    cost = 1.0

    def __init__(self, config: RepetitionConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config

    def check(self, record: dict[str, Any]) -> Check:
        text = record.get("response") or ""
        grams = list(word_ngrams(words(text), self.config.n))
        if len(grams) < self.config.min_ngrams:
            return Check(True, None, {"ngrams": len(grams)})
        ratio = 1.0 - len(set(grams)) / len(grams)
        detail = {"repeated_ratio": round(ratio, 4), "n": self.config.n}
        if ratio > self.config.max_ratio:
            return Check(False, f"repetitive: {ratio:.2f} of {self.config.n}-grams repeated > {self.config.max_ratio}", detail)
        return Check(True, None, detail)
