"""The teacher backend interface: requests in, results streamed back as they complete.

Every backend (OpenAI-compatible server, in-process transformers model) returns the same
:class:`GenerationResult`, so records carry the same fields whichever produced them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request (OpenAI chat-completions names).

    Attributes:
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus sampling mass in (0, 1].
        max_tokens: most tokens to generate; a response that reaches it is ``finish_reason="length"``.
        seed: base random seed; request ``i`` of a prompt uses ``seed + sample_index``.
        stop: stop strings, or ``None``.
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without unset (``None``) entries."""
        d = {f: getattr(self, f) for f in _SAMPLING_FIELDS}
        if d["stop"] is not None:
            d["stop"] = list(d["stop"])
        return {k: v for k, v in d.items() if v is not None}

    def seed_for(self, sample_index: int) -> int | None:
        """The seed of sample ``sample_index``, or ``None`` when no base seed is set."""
        return None if self.seed is None else self.seed + sample_index


@dataclass(frozen=True)
class GenerationRequest:
    """One candidate to generate: sample ``sample_index`` of the prompt ``messages``.

    ``step`` names the strategy step that asks (``critique``, ``revise``...); it enters the
    cache key, so two steps that happen to send the same messages get their own responses
    (``None``: a strategy's only or final call).

    ``prompt`` makes the request a raw text completion (``/v1/completions``, no chat template
    applied; ``messages`` is then empty): Magpie sends the chat template's pre-query prefix
    this way. Only backends with ``raw_completions`` serve it. ``schema`` is a JSON schema (as
    a JSON string) the answer should follow; backends with ``structured_output`` turned on send
    it as ``response_format``, others ignore it (strategies parse the text robustly either way).
    Both enter the cache key when set.
    """

    messages: tuple[tuple[str, str], ...]
    sampling: SamplingParams
    sample_index: int = 0
    step: str | None = None
    prompt: str | None = None
    schema: str | None = None

    @classmethod
    def make(cls, messages: list[dict[str, str]], sampling: SamplingParams, sample_index: int = 0,
             step: str | None = None, schema: dict[str, Any] | None = None) -> GenerationRequest:
        """Build from ``[{"role", "content"}]`` messages (``schema``: a JSON schema dict)."""
        return cls(tuple((m["role"], m["content"]) for m in messages), sampling, sample_index, step,
                   schema=json.dumps(schema, sort_keys=True) if schema is not None else None)

    @classmethod
    def raw(cls, prompt: str, sampling: SamplingParams, sample_index: int = 0,
            step: str | None = None) -> GenerationRequest:
        """A raw text completion of ``prompt`` (no chat template; see the class doc)."""
        return cls((), sampling, sample_index, step, prompt=prompt)

    def message_dicts(self) -> list[dict[str, str]]:
        """The messages as ``[{"role", "content"}]`` (a raw completion: its prompt as one
        ``{"role": "raw", ...}`` entry, for provenance)."""
        if self.prompt is not None:
            return [{"role": "raw", "content": self.prompt}]
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class GenerationResult:
    """What a backend returned for one request.

    Attributes:
        text: the completion, or ``None`` on error.
        finish_reason: ``"stop"``, ``"length"`` (cut off by ``max_tokens``), or the server's value.
        tokens_in, tokens_out: prompt and completion tokens (from the server's usage).
        latency_s: seconds from sending to the full response (including retries).
        error_kind: on failure, ``"rate_limit"``, ``"timeout"``, ``"connection"``,
            ``"server_error"``, ``"bad_response"`` (a body that is not a completion),
            ``"http_<status>"`` or ``"exception"``; else ``None``.
        error: the failure's message.
        retries: retries spent on this request.
        cached: served from the response cache (no backend call).
    """

    text: str | None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    retries: int = 0
    cached: bool = False

    @property
    def transient(self) -> bool:
        """A failure that may not happen again (timeout, connection, 429, 408, 409, 5xx,
        garbled body, an unexpected exception): it is retried on the next run, never recorded
        as a verdict. Only HTTP 4xx answers about the request itself are permanent."""
        kind = self.error_kind
        if kind is None:
            return False
        return not kind.startswith("http_4") or kind in TRANSIENT_HTTP

    def to_json(self) -> str:
        """Serialise (for the cache)."""
        return json.dumps({f: getattr(self, f) for f in _RESULT_FIELDS})  # not asdict: this is per response

    @classmethod
    def from_json(cls, text: str) -> GenerationResult:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


_SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingParams))
_RESULT_FIELDS = tuple(f.name for f in fields(GenerationResult))

TRANSIENT_HTTP = frozenset({"http_408", "http_409", "http_425", "http_429"})
"""4xx statuses that are worth retrying later (timeout, conflict, too early, rate limit)."""


@dataclass
class BackendStats:
    """Counters a backend keeps over a run."""

    calls: int = 0
    retries: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "calls": self.calls,
            "retries": dict(self.retries),
            "failures": dict(self.failures),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }


class Backend:
    """Base of teacher backends.

    Subclasses set ``kind`` and implement :meth:`preflight` and :meth:`stream`. ``model`` is
    the model name as the recipe gives it (it enters the cache key and every record).
    """

    kind: ClassVar[str] = "backend"
    raw_completions: ClassVar[bool] = False
    """The backend serves raw text completions (:meth:`GenerationRequest.raw`)."""
    concurrent: ClassVar[bool] = False
    """Requests are served concurrently, up to the backend's ``concurrency`` (a server): an
    executor keeps requests of the next batch in flight while a batch drains."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.stats = BackendStats()

    @classmethod
    def from_config(cls, config: Any, base_dir: Any = None) -> Backend:
        """Build from a ``teacher:``-shaped section (:class:`~distillery.backends.config.TeacherConfig`);
        ``base_dir`` is the folder relative paths resolve against.

        Raises:
            distillery.errors.RecipeError: the section cannot be used by this backend.
        """
        raise NotImplementedError(f"{cls.__name__}.from_config")

    async def preflight(self) -> None:
        """Check the backend can serve ``model``; raise :class:`~distillery.errors.BackendError` if not."""

    def stream(
        self,
        requests: list[GenerationRequest],
        on_receive: Callable[[int, GenerationResult], None] | None = None,
    ) -> AsyncIterator[tuple[int, GenerationResult]]:
        """Generate ``requests``; yield ``(position in requests, result)`` as each completes.

        ``on_receive(position, result)`` is called the moment a result exists, before it is
        yielded and before anything else is done with it (the response cache stores it there,
        so a process killed between receipt and use never pays for it again).

        Never raises for a failed request: the result carries ``error_kind``.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections or the model."""

    def cache_key(self, request: GenerationRequest) -> str:
        """sha256 over (backend kind, model, messages, sampling parameters, sample index, step).

        The key is built from values only (no object identities or file paths), so it is
        stable across processes, machines and recipe locations.
        """
        key: dict[str, Any] = {
            "backend": self.kind,
            "model": self.model,
            "messages": [list(m) for m in request.messages],
            "sampling": request.sampling.to_dict(),
            "sample_index": request.sample_index,
        }
        if request.step is not None:
            key["step"] = request.step
        if request.prompt is not None:
            key["prompt"] = request.prompt
        if request.schema is not None:
            key["schema"] = request.schema
        blob = json.dumps(key, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()  # a lone surrogate too
