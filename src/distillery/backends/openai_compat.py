"""Backend for any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp,
Ollama, ``transformers serve``, OpenAI itself), through the official ``openai`` async client.

Chat requests go to ``/v1/chat/completions``; raw text completions
(:meth:`~distillery.backends.base.GenerationRequest.raw`, the prompt sent as it is, no chat
template applied: Magpie's pre-query prefix) go to ``/v1/completions`` (served by vLLM,
SGLang, llama.cpp and ``transformers serve``; OpenAI's hosted chat models do not). With
``structured_output`` on, a request's JSON schema is sent as
``response_format={"type": "json_schema", ...}`` (vLLM, SGLang and OpenAI constrain the
answer to it; some servers, ``transformers serve`` among them, reject the field, so it is off
by default and strategies parse the text robustly either way).

Concurrency is bounded by a semaphore, held only while a request is on the wire (a request
that backs off gives its slot to another); each request has a timeout; 429, 408, 409, 5xx,
timeouts, connection errors and garbled bodies (not JSON, or JSON without ``choices``) are
retried with capped exponential backoff and full jitter (Brooker, "Exponential Backoff and
Jitter", AWS Architecture Blog, 2015), honouring ``Retry-After``, until ``max_retries`` or the
request's ``retry_budget_s`` is spent; then the failure is returned as transient (the run
leaves its batch unfinished for the next run). The client's own retries are turned off so
that every retry is counted here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai

from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.errors import BackendError
from distillery.registry import register

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class BadResponse(Exception):
    """A 200 answer whose body is not a completion (no ``choices``, no text)."""


def classify_error(exc: BaseException) -> tuple[str, bool]:
    """Map an exception from the ``openai`` client to ``(error_kind, retryable)``."""
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError):
        return "timeout", True
    if isinstance(exc, BadResponse | openai.APIResponseValidationError | json.JSONDecodeError):
        return "bad_response", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit", True
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        if code >= 500:
            return "server_error", True
        return f"http_{code}", code in RETRYABLE_STATUS
    return "exception", False


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter backoff: uniform in ``[0, min(cap_s, base_s * 2**attempt)]`` seconds."""
    return rng.uniform(0, min(cap_s, base_s * (2**attempt)))


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@register("backend", name="openai")
class OpenAIBackend(Backend):
    """Chat and raw text completions against an OpenAI-compatible server.

    Args:
        model: the model name the server knows.
        base_url: e.g. ``http://127.0.0.1:8000/v1``; ``None`` means the OpenAI API.
        api_key: the key (local servers accept any string).
        concurrency: most requests in flight at once.
        timeout_s: per-request timeout, seconds.
        max_retries: retries of a retryable failure before giving up.
        retry_budget_s: most seconds one request may take, retries and backoff included.
        backoff_base_s, backoff_cap_s: backoff schedule, seconds.
        extra_body: extra JSON fields sent with every request (server-specific options).
        structured_output: send a request's JSON schema as ``response_format`` (see the module doc).
    """

    kind = "openai"
    raw_completions = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        retry_budget_s: float = 600.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 20.0,
        extra_body: dict[str, Any] | None = None,
        structured_output: bool = False,
    ) -> None:
        super().__init__(model)
        self.base_url = base_url
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0
        )
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_budget_s = retry_budget_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.extra_body = extra_body or {}
        self.structured_output = structured_output
        self._rng = random.Random(0)
        self._semaphore: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, config: Any, base_dir: Any = None) -> OpenAIBackend:
        """From a ``teacher:`` section (``base_url``, ``api_key_env``, ``concurrency``,
        ``timeout_s``, ``max_retries``, ``retry_budget_s``, ``structured_output``; ``options`` go
        into every request's body).

        Raises:
            distillery.errors.RecipeError: ``api_key_env`` names an unset variable.
        """
        return cls(
            config.model,
            base_url=config.base_url,
            api_key=config.api_key(),
            concurrency=config.concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            retry_budget_s=config.retry_budget_s,
            extra_body=dict(config.options) or None,
            structured_output=getattr(config, "structured_output", False),
        )

    async def preflight(self) -> None:
        """Fail fast when the server is unreachable or does not know the model.

        Lists the server's models; if the model is not listed (some servers list only loaded
        models), sends one 1-token request instead.

        Raises:
            BackendError: unreachable server, bad credentials, or unknown model.
        """
        where = self.base_url or "the OpenAI API"
        try:
            listed = [m.id async for m in self.client.models.list()]
        except openai.APIConnectionError as e:
            raise BackendError(f"teacher: cannot reach the server at {where}: {e.__cause__ or e}") from e
        except openai.AuthenticationError as e:
            raise BackendError(f"teacher: the server at {where} refused the API key (401)") from e
        except openai.APIStatusError:
            listed = []
        if self.model in listed:
            return
        try:
            await self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1, extra_body=self.extra_body
            )
        except openai.APIConnectionError as e:
            raise BackendError(f"teacher: cannot reach the server at {where}: {e.__cause__ or e}") from e
        except openai.APIStatusError as e:
            offered = f"; it lists: {', '.join(listed[:10])}" if listed else ""
            raise BackendError(
                f"teacher: the server at {where} cannot serve model {self.model!r} "
                f"(HTTP {e.status_code}: {str(e.message)[:200]}){offered}"
            ) from e

    def cache_key(self, request: GenerationRequest) -> str:
        """The base key, told apart when the request's schema is sent as ``response_format``
        (an answer constrained to the schema is another answer than a free one)."""
        key = super().cache_key(request)
        if self.structured_output and request.schema is not None and request.prompt is None:
            key = hashlib.sha256(f"{key}|structured_output".encode()).hexdigest()
        return key

    def _kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """The request body: chat messages, or a raw ``prompt`` (``/v1/completions``)."""
        sampling = request.sampling
        kwargs: dict[str, Any] = {"model": self.model}
        if request.prompt is not None:
            kwargs["prompt"] = request.prompt
        else:
            kwargs["messages"] = request.message_dicts()
            if self.structured_output and request.schema is not None:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": json.loads(request.schema), "strict": False},
                }
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens)
        seed = sampling.seed_for(request.sample_index)
        if seed is not None:
            kwargs["seed"] = seed
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        return kwargs

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        """One request (chat, or a raw completion when ``request.prompt`` is set), with retries."""
        if request.prompt is not None:
            return await self._call(self.client.completions.create, self._kwargs(request), raw=True)
        return await self._call(self.client.chat.completions.create, self._kwargs(request), raw=False)

    async def _call(self, create: Callable[..., Any], kwargs: dict[str, Any], raw: bool) -> GenerationResult:
        """``create(**kwargs)`` under the semaphore, retried with backoff (see the module doc)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        start = time.perf_counter()
        retries = 0
        while True:
            async with self._semaphore:  # held while on the wire only, not while backing off
                try:
                    self.stats.calls += 1
                    response = await asyncio.wait_for(create(**kwargs, extra_body=self.extra_body),
                                                      timeout=self.timeout_s + 5)
                    return self._result(response, start, retries, raw)
                except (TimeoutError, openai.OpenAIError, BadResponse, json.JSONDecodeError) as exc:
                    failure = exc  # a body that is not JSON comes as JSONDecodeError from the client
            kind, retryable = classify_error(failure)
            delay = _retry_after(failure)
            if delay is None:
                delay = backoff_delay(retries, self.backoff_base_s, self.backoff_cap_s, self._rng)
            delay = min(delay, self.backoff_cap_s)
            spent = time.perf_counter() - start
            if not retryable or retries >= self.max_retries or spent + delay > self.retry_budget_s:
                self.stats.failures[kind] += 1
                why = f"after {retries} retries"
                if retryable and retries < self.max_retries:
                    why += f"; retry budget of {self.retry_budget_s:g} s spent"
                return GenerationResult(
                    text=None,
                    latency_s=spent,
                    error_kind=kind,
                    error=f"{type(failure).__name__}: {str(failure)[:300]} ({why})",
                    retries=retries,
                )
            self.stats.retries[kind] += 1
            retries += 1
            await asyncio.sleep(delay)

    def _result(self, response: Any, start: float, retries: int, raw: bool = False) -> GenerationResult:
        """The result of a 200 answer (``raw``: of ``/v1/completions``, whose text is ``choices[0].text``).

        Raises:
            BadResponse: the body is not a completion (no ``choices``, no message or text, text not a string).
        """
        choices = getattr(response, "choices", None)
        if not choices:
            raise BadResponse(f"the answer has no choices: {str(response)[:200]}")
        if raw:
            text = getattr(choices[0], "text", None)
            if not isinstance(text, str):  # a completion's text is never null
                raise BadResponse(f"the answer's first choice has no text: {str(choices[0])[:200]}")
        else:
            message = getattr(choices[0], "message", None)
            text = getattr(message, "content", None) if message is not None else None
            if message is None or not isinstance(text, str | None):
                raise BadResponse(f"the answer's first choice has no text message: {str(choices[0])[:200]}")
        usage = getattr(response, "usage", None)
        tokens_in = (getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
        tokens_out = (getattr(usage, "completion_tokens", 0) or 0) if usage else 0
        self.stats.tokens_in += tokens_in
        self.stats.tokens_out += tokens_out
        return GenerationResult(
            text=text or "",
            finish_reason=getattr(choices[0], "finish_reason", None),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_s=time.perf_counter() - start,
            retries=retries,
        )

    async def stream(self, requests: list[GenerationRequest],
                     on_receive: Callable[[int, GenerationResult], None] | None = None,
                     ) -> AsyncIterator[tuple[int, GenerationResult]]:
        async def run(i: int, request: GenerationRequest) -> tuple[int, GenerationResult]:
            try:
                result = await self._one(request)
            except Exception as exc:  # a bug or an unexpected payload: keep it as a failed result
                self.stats.failures["exception"] += 1
                result = GenerationResult(text=None, error_kind="exception", error=f"{type(exc).__name__}: {exc}")
            if on_receive is not None:
                on_receive(i, result)  # at receipt, before anything else is done with it
            return i, result

        tasks = [asyncio.create_task(run(i, r)) for i, r in enumerate(requests)]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for task in tasks:
                task.cancel()

    async def aclose(self) -> None:
        await self.client.close()
