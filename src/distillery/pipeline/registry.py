"""Which stage configs a recipe may name, by section.

Adding a stage = writing its module (a ``StageConfig`` subclass with a ``type`` literal and
a ``Stage``) and listing the config class here; the recipe's validation, error messages and
the runner pick it up from this list.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from distillery.dedup.exact import ExactDedupConfig
from distillery.dedup.minhash import MinHashConfig
from distillery.dedup.semantic import SemanticDedupConfig
from distillery.filter.difficulty import DifficultyConfig
from distillery.filter.language import LanguageConfig
from distillery.filter.length import LengthConfig
from distillery.filter.perplexity import PerplexityConfig
from distillery.filter.repetition import RepetitionConfig
from distillery.pipeline.config import StageConfig
from distillery.verify.consistency import SelfConsistencyConfig
from distillery.verify.judge import JudgeConfig
from distillery.verify.math_answer import MathAnswerConfig
from distillery.verify.python_program import PythonProgramConfig

VERIFIERS: list[type[StageConfig]] = [MathAnswerConfig, PythonProgramConfig, JudgeConfig, SelfConsistencyConfig]
FILTERS: list[type[StageConfig]] = [LengthConfig, RepetitionConfig, LanguageConfig, PerplexityConfig, DifficultyConfig]
DEDUP: list[type[StageConfig]] = [ExactDedupConfig, MinHashConfig, SemanticDedupConfig]


def config_union(configs: list[type[StageConfig]]) -> Any:
    """A pydantic type accepting any of ``configs``, told apart by their ``type`` field."""
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[tuple(configs)], Field(discriminator="type")]  # noqa: UP007


def type_names(configs: list[type[StageConfig]]) -> list[str]:
    """The ``type`` values of ``configs``."""
    return [c.model_fields["type"].default for c in configs]
