"""``filters: length``: keep responses whose length lies in a band, in tokens and characters."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.registry import register

_TOKEN = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """A tokenizer-free token count: words and punctuation marks (close to BPE counts for English prose)."""
    return len(_TOKEN.findall(text))


@register("filter")
class LengthConfig(StageConfig):
    """Recipe entry of the length band.

    Attributes:
        min_tokens, max_tokens: band in tokens. Tokens are the teacher's completion tokens
            when the backend reported them, else :func:`approx_tokens` of the response (curate mode).
        min_chars, max_chars: band in characters of the response.

    Bounds are non-negative and each minimum is at most its maximum (else the recipe is refused:
    a band that rejects everything is a typo, not a filter).
    """

    type: Literal["length"] = "length"
    min_tokens: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    min_chars: int = Field(1, ge=0)
    max_chars: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _band(self) -> LengthConfig:
        for unit in ("tokens", "chars"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if high is not None and low > high:
                raise ValueError(f"min_{unit} ({low}) is greater than max_{unit} ({high}): the band is empty")
        return self

    def build(self, ctx: BuildContext) -> Stage:
        return LengthFilter(self)


class LengthFilter(Stage):
    """Rejects responses outside ``[min, max]`` tokens or characters, naming the bound broken."""

    kind = "filter"
    cost = 0.5

    def __init__(self, config: LengthConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config

    def check(self, record: dict[str, Any]) -> Check:
        text = record.get("response") or ""
        chars = len(text)
        if record.get("tokens_out"):
            tokens, unit = int(record["tokens_out"]), "tokens"
        else:
            tokens, unit = approx_tokens(text), "approx_tokens"
        c = self.config
        detail = {"chars": chars, unit: tokens}
        if tokens < c.min_tokens:
            return Check(False, f"too_short: {tokens} < {c.min_tokens} {unit}", detail)
        if c.max_tokens is not None and tokens > c.max_tokens:
            return Check(False, f"too_long: {tokens} > {c.max_tokens} {unit}", detail)
        if chars < c.min_chars:
            return Check(False, f"too_short: {chars} < {c.min_chars} chars", detail)
        if c.max_chars is not None and chars > c.max_chars:
            return Check(False, f"too_long: {chars} > {c.max_chars} chars", detail)
        return Check(True, None, detail)
