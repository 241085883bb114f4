"""The ``teacher:`` section of a recipe (also the ``model:`` section of judge and difficulty
stages) and the backend it names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from distillery import registry
from distillery.backends.base import Backend, SamplingParams
from distillery.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(_Strict):
    """Sampling parameters (OpenAI names). ``seed``: request i of a prompt uses ``seed + i``."""

    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = 0
    stop: list[str] | None = None

    def params(self) -> SamplingParams:
        """As the frozen :class:`SamplingParams` backends take."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
            stop=tuple(self.stop) if self.stop else None,
        )


class TeacherConfig(_Strict):
    """The model that writes candidates.

    Attributes:
        backend: a registered backend: ``openai`` (any OpenAI-compatible server) or
            ``transformers`` (in-process), or one a plugin adds.
        model: the server's model name, or a local folder / Hub name for ``transformers``;
            ``builtin:teacher`` / ``builtin:student`` name the models shipped with distillery.
        base_url: server URL, e.g. ``http://127.0.0.1:8000/v1`` (``openai`` backend).
        api_key_env: environment variable holding the API key (unset: no key).
        concurrency: requests in flight (``openai``); timeout_s: per request; max_retries: on 429/5xx/timeouts.
        retry_budget_s: most seconds one request may spend, retries and backoff included, before
            it fails transiently (it is retried on the next run, never recorded as a verdict).
        batch_size, device, dtype: ``transformers`` backend.
        structured_output: send the JSON schema of the strategy steps that want JSON as
            ``response_format: {type: json_schema}`` (``openai`` backend). vLLM, SGLang and the
            OpenAI API constrain the answer to the schema; ``transformers serve`` and some other
            servers reject the field (HTTP 4xx), so it is off by default. It changes what the
            teacher writes, so it is part of the recipe's data hash. The ``transformers``
            backend ignores it (strategies parse the text robustly either way).
        rpm, tpm: the provider's rate limits, requests and tokens (prompt + completion) per
            minute (``openai`` backend; ``None``: no limit). Requests wait in a token bucket
            before they are sent; tokens are estimated before a call and corrected from the
            usage the server reports.
        adaptive_concurrency: on 429/503 answers, halve the requests allowed in flight and grow
            them back by one per window of successes, up to ``concurrency`` (AIMD, as TCP's
            congestion control), so a run against a rate-limited provider converges instead
            of retrying in lockstep (``openai`` backend).
        threads: CPU threads of the ``transformers`` backend (``None``: the cores this process
            may use, less the load other processes put on them, at least 1).
        options: backend-specific options (for backends plugins add).
    """

    backend: str = "openai"
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = Field(16, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    retry_budget_s: float = Field(600.0, gt=0)
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    dtype: str = "auto"
    sampling: SamplingConfig = SamplingConfig()
    structured_output: bool = False
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    adaptive_concurrency: bool = True
    threads: int | None = Field(None, ge=1)
    options: dict[str, Any] = {}

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in registry.names("backend"):
            raise ValueError(registry.unknown_message("backend", value))
        return value

    @model_serializer(mode="wrap")
    def _without_defaults_added_later(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # ``structured_output`` is left out while off, so the data hash (and run directories)
        # of recipes written before it existed stay the same
        data = handler(self)
        if isinstance(data, dict) and not data.get("structured_output", True):
            data.pop("structured_output")
        return data

    def api_key(self) -> str | None:
        """The API key from :attr:`api_key_env`.

        Raises:
            RecipeError: the variable is named but not set.
        """
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if value is None:
            raise RecipeError(f"teacher.api_key_env: environment variable {self.api_key_env} is not set")
        return value


def build_backend(config: TeacherConfig, base_dir: str | Path | None = None) -> Backend:
    """The (uncached) backend a teacher section names: the registered backend class's
    ``from_config(config, base_dir)``.

    Raises:
        RecipeError: an unknown backend, or ``api_key_env`` names an unset variable.
    """
    return registry.get("backend", config.backend).from_config(config, base_dir)
