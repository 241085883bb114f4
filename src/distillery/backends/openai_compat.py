"""Backend for any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp,
Ollama, ``transformers serve``, OpenAI itself).

Chat requests go to ``/v1/chat/completions``; raw text completions
(:meth:`~distillery.backends.base.GenerationRequest.raw`, the prompt sent as it is, no chat
template applied: Magpie's pre-query prefix) go to ``/v1/completions`` (served by vLLM,
SGLang, llama.cpp and ``transformers serve``; OpenAI's hosted chat models do not). With
``structured_output`` on, a request's JSON schema is sent as
``response_format={"type": "json_schema", ...}`` (vLLM, SGLang and OpenAI constrain the
answer to it; some servers, ``transformers serve`` among them, reject the field, so it is off
by default and strategies parse the text robustly either way).

Transport: one ``aiohttp`` session per event loop whose connection pool holds
``concurrency`` keep-alive connections to the server, so a request reuses a connection
instead of opening one, and the pool's cost per request does not grow with the concurrency
(the ``openai`` SDK's ``httpx`` pool scans every pooled connection at each request start and
close, and keeps at most 100 alive). Bodies are parsed with :func:`json.loads` and read as
plain dicts, without per-request model validation. The error semantics are the ``openai``
client's: the HTTP status decides, ``Retry-After`` is honoured (in seconds or as an HTTP date).

Concurrency is bounded by a slot held only while a request is on the wire (a request that
backs off gives its slot to another); with ``adaptive_concurrency`` the number of slots halves
on 429/503 and grows back one per window of successes (AIMD). With ``rpm``/``tpm`` a request
first waits in a token bucket (tokens estimated from the prompt's characters plus
``max_tokens``, corrected from the reported usage). Each request has a timeout; 429, 408,
409, 425, 5xx, timeouts, connection errors and garbled bodies (not JSON, or JSON without
``choices``) are retried with capped exponential backoff and full jitter (Brooker,
"Exponential Backoff and Jitter", AWS Architecture Blog, 2015), or after ``Retry-After``,
until ``max_retries`` or the request's ``retry_budget_s`` is spent; then the failure is
returned as transient (the run leaves its batch unfinished for the next run).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.backends.ratelimit import AdaptiveConcurrency, RateLimiter, parse_retry_after
from distillery.errors import BackendError
from distillery.registry import register

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
OVERLOAD_STATUS = {429, 503}  # the server asks for less: adaptive concurrency backs off
DEFAULT_BASE_URL = "https://api.openai.com/v1"


class BadResponse(Exception):
    """A 200 answer whose body is not a completion (not JSON, no ``choices``, no text)."""


class HTTPStatusError(Exception):
    """A non-200 answer.

    Attributes:
        status: the HTTP status code. message: the server's error message (or body, cut).
        retry_after: seconds the server asked to wait (``Retry-After``), or ``None``.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


def classify_error(exc: BaseException) -> tuple[str, bool]:
    """Map a failed call to ``(error_kind, retryable)``: ``timeout``, ``bad_response``,
    ``connection``, ``rate_limit`` (429), ``server_error`` (5xx), ``http_<code>`` (other statuses;
    retryable for 408, 409, 425), else ``exception`` (not retried)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", True
    if isinstance(exc, BadResponse | json.JSONDecodeError | UnicodeDecodeError):
        return "bad_response", True
    if isinstance(exc, HTTPStatusError):
        if exc.status == 429:
            return "rate_limit", True
        if exc.status >= 500:
            return "server_error", True
        return f"http_{exc.status}", exc.status in RETRYABLE_STATUS
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "connection", True
    return "exception", False


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter backoff: uniform in ``[0, min(cap_s, base_s * 2**attempt)]`` seconds."""
    return rng.uniform(0, min(cap_s, base_s * (2**attempt)))


def _error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    except (ValueError, UnicodeDecodeError):
        pass
    return body[:300].decode("utf-8", "replace")


def _estimate_tokens(kwargs: dict[str, Any]) -> int:
    """A request's tokens before it is sent: its text's characters / 4 plus ``max_tokens``."""
    if "prompt" in kwargs:
        chars = len(kwargs["prompt"])
    else:
        chars = sum(len(str(m.get("content") or "")) for m in kwargs["messages"])
    return chars // 4 + 1 + int(kwargs.get("max_tokens") or 0)


@register("backend", name="openai")
class OpenAIBackend(Backend):
    """Chat and raw text completions against an OpenAI-compatible server.

    Args:
        model: the model name the server knows.
        base_url: e.g. ``http://127.0.0.1:8000/v1``; ``None`` means the OpenAI API.
        api_key: the key (local servers accept any string).
        concurrency: most requests in flight at once (the connection pool's size too).
        timeout_s: per-request timeout, seconds.
        max_retries: retries of a retryable failure before giving up.
        retry_budget_s: most seconds one request may take, retries and backoff included.
        backoff_base_s, backoff_cap_s: backoff schedule, seconds.
        extra_body: extra JSON fields sent with every request (server-specific options).
        structured_output: send a request's JSON schema as ``response_format`` (see the module doc).
        rpm, tpm: requests and tokens per minute allowed (``None``: no limit).
        adaptive_concurrency: halve the slots on 429/503, grow them back on success (AIMD).
    """

    kind = "openai"
    raw_completions = True
    concurrent = True

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
        rpm: float | None = None,
        tpm: float | None = None,
        adaptive_concurrency: bool = True,
    ) -> None:
        super().__init__(model)
        self.base_url = base_url
        self._root = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key or 'EMPTY'}", "Content-Type": "application/json"}
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_budget_s = retry_budget_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.extra_body = extra_body or {}
        self.structured_output = structured_output
        self._rng = random.Random(0)
        self.slots = AdaptiveConcurrency(concurrency, enabled=adaptive_concurrency)
        self.rate = RateLimiter(rpm, tpm)  # also without limits: a Retry-After pauses every request
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, config: Any, base_dir: Any = None) -> OpenAIBackend:
        """From a ``teacher:`` section (``base_url``, ``api_key_env``, ``concurrency``,
        ``timeout_s``, ``max_retries``, ``retry_budget_s``, ``structured_output``, ``rpm``,
        ``tpm``, ``adaptive_concurrency``; ``options`` go into every request's body).

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
            rpm=getattr(config, "rpm", None),
            tpm=getattr(config, "tpm", None),
            adaptive_concurrency=getattr(config, "adaptive_concurrency", True),
        )

    # -- transport -----------------------------------------------------------------------------
    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=60)
        return aiohttp.ClientSession(
            connector=connector, headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s), raise_for_status=False,
        )

    def session(self) -> aiohttp.ClientSession:
        """The session of the running event loop (made on first use; one pool of
        ``concurrency`` connections)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            self._session = self._new_session(self.concurrency)
            self._session_loop = loop
        return self._session

    async def _post(self, path: str, payload: dict[str, Any], session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        """POST ``payload`` to ``<base_url><path>``; the answer's JSON body.

        Raises:
            HTTPStatusError: a non-200 status. BadResponse: a body that is not a JSON object.
            aiohttp.ClientError, OSError, asyncio.TimeoutError: the transport failed.
        """
        async with (session or self.session()).post(self._root + path, data=json.dumps(payload)) as response:
            body = await response.read()
            if response.status != 200:
                raise HTTPStatusError(response.status, _error_message(body),
                                      parse_retry_after(response.headers.get("Retry-After")))
        data = json.loads(body)
        if not isinstance(data, dict):
            raise BadResponse(f"the answer is not a JSON object: {body[:200]!r}")
        return data

    async def preflight(self) -> None:
        """Fail fast when the server is unreachable or does not know the model.

        Lists the server's models; if the model is not listed (some servers list only loaded
        models), sends one 1-token request instead.

        Raises:
            BackendError: unreachable server, bad credentials, or unknown model.
        """
        where = self.base_url or "the OpenAI API"
        async with self._new_session(2) as session:
            listed: list[str] = []
            try:
                async with session.get(self._root + "/models") as response:
                    body = await response.read()
                    if response.status == 401:
                        raise BackendError(f"teacher: the server at {where} refused the API key (401)")
                    if response.status == 200:
                        data = json.loads(body)
                        listed = [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]
            except (TimeoutError, aiohttp.ClientConnectionError, OSError) as e:
                raise BackendError(f"teacher: cannot reach the server at {where}: {e}") from e
            except (ValueError, AttributeError):
                listed = []
            if self.model in listed:
                return
            payload = {"model": self.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1,
                       **self.extra_body}
            try:
                await self._post("/chat/completions", payload, session)
            except (TimeoutError, aiohttp.ClientConnectionError, OSError) as e:
                raise BackendError(f"teacher: cannot reach the server at {where}: {e}") from e
            except HTTPStatusError as e:
                offered = f"; it lists: {', '.join(listed[:10])}" if listed else ""
                raise BackendError(
                    f"teacher: the server at {where} cannot serve model {self.model!r} "
                    f"(HTTP {e.status}: {e.message[:200]}){offered}"
                ) from e
            except (BadResponse, ValueError):
                pass  # it answered 200: it serves the model, whatever its body looks like

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
        raw = request.prompt is not None
        payload = {**self._kwargs(request), **self.extra_body}
        return await self._call("/completions" if raw else "/chat/completions", payload, raw)

    async def _call(self, path: str, payload: dict[str, Any], raw: bool) -> GenerationResult:
        """POST ``payload`` in a slot, retried with backoff (see the module doc)."""
        start = time.perf_counter()
        retries = 0
        estimate = _estimate_tokens(payload) if self.rate.tpm else 0
        while True:
            await self.rate.acquire(estimate)
            async with self.slots.slot():  # held while on the wire only, not while backing off
                try:
                    self.stats.calls += 1
                    data = await self._post(path, payload)  # the session's total timeout bounds it
                    result = self._result(data, start, retries, raw)
                except (TimeoutError, aiohttp.ClientError, OSError, HTTPStatusError, BadResponse, ValueError) as exc:
                    failure: BaseException = exc  # a body that is not JSON comes as a ValueError
                else:
                    self.slots.on_success()
                    if estimate:
                        self.rate.correct(estimate, (result.tokens_in or 0) + (result.tokens_out or 0))
                    return result
            kind, retryable = classify_error(failure)
            delay = getattr(failure, "retry_after", None)
            if isinstance(failure, HTTPStatusError) and failure.status in OVERLOAD_STATUS:
                self.slots.on_overload()
                if delay is not None:
                    self.rate.pause(min(delay, self.backoff_cap_s))
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

    def _result(self, data: dict[str, Any], start: float, retries: int, raw: bool = False) -> GenerationResult:
        """The result of a 200 answer (``raw``: of ``/v1/completions``, whose text is ``choices[0].text``).

        Raises:
            BadResponse: the body is not a completion (no ``choices``, no message or text, text not a string).
        """
        choices = data.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise BadResponse(f"the answer has no choices: {str(data)[:200]}")
        choice = choices[0]
        if raw:
            text = choice.get("text")
            if not isinstance(text, str):  # a completion's text is never null
                raise BadResponse(f"the answer's first choice has no text: {str(choice)[:200]}")
        else:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if not isinstance(message, dict) or not isinstance(text, str | None):
                raise BadResponse(f"the answer's first choice has no text message: {str(choice)[:200]}")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        tokens_in = _count(usage.get("prompt_tokens"))
        tokens_out = _count(usage.get("completion_tokens"))
        self.stats.tokens_in += tokens_in
        self.stats.tokens_out += tokens_out
        return GenerationResult(
            text=text or "",
            finish_reason=choice.get("finish_reason"),
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
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except RuntimeError:  # made in another event loop, already gone
                pass
        self._session = None


def _count(value: Any) -> int:
    """A usage count as an int (0 when absent or not a number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
