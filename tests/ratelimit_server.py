"""A real HTTP server that speaks the OpenAI chat-completions protocol and enforces a rate
limit, as a hosted provider does: a sliding window of requests (and optionally tokens) per
``window_s`` seconds answered 429 with a ``Retry-After`` header when exceeded, and optionally a
cap on requests in flight answered 503. Used to test the backend's rate limiting: a real
provider's limit cannot be hit on demand in a test."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler

from tests.helpers import QuietHTTPServer


@dataclass(frozen=True)
class Hit:
    """One chat request as the server saw it: ``at`` (unix time of arrival, seconds), the
    ``status`` it was answered with, ``key`` (its last message's content), ``retry_after``
    (the header sent, or ``None``) and ``retry_at`` (the unix time it names, or ``None``)."""

    at: float
    status: int
    key: str
    retry_after: str | None = None
    retry_at: float | None = None


class _Server(QuietHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops a burst's connections (SYN retried after 1 s, 3 s...)


class RateLimitServer:
    """Serves model ``model`` on 127.0.0.1 (a free port), threaded.

    Args:
        requests: most requests accepted in any ``window_s`` seconds (sliding window), or ``None``.
        window_s: the window, seconds.
        tokens: most tokens accepted in any window, a request counting ``ceil(prompt chars / 4)
            + max_tokens`` (as providers count ``max_tokens`` when the request arrives), or ``None``.
        max_concurrent: most requests in flight; one more is answered ``overload_status`` at
            once (``None``: no cap).
        overload_status: the status of a request over ``max_concurrent`` (503, or 429).
        latency_s: seconds each accepted request takes before its answer.
        retry_after: the ``Retry-After`` of a 429 over the window: ``"seconds"`` (a decimal,
            the seconds until the window has room), ``"date"`` (an HTTP date, rounded up to the
            next whole second), or ``None`` (no header). 503s carry none.
        fill: answer ``max_tokens`` tokens (``max_tokens * 4`` characters, ``finish_reason:
            "length"``), so that the usage reported is what the request was counted for;
            otherwise a short answer (``"answer to <key> #### 1"``).

    Attributes:
        log: every chat request, a :class:`Hit` each, in arrival order.
        counts: answers by status (``counts[200]``, ``counts[429]``, ``counts[503]``).
        max_in_flight: most accepted requests in flight at once.
    """

    def __init__(self, requests: int | None = None, window_s: float = 1.0, tokens: int | None = None,
                 max_concurrent: int | None = None, overload_status: int = 503, latency_s: float = 0.0,
                 retry_after: str | None = "seconds", fill: bool = False, model: str = "rate-model") -> None:
        if retry_after not in ("seconds", "date", None):
            raise ValueError(f"retry_after must be 'seconds', 'date' or None, not {retry_after!r}")
        self.model = model
        self.limit_requests, self.limit_tokens, self.window_s = requests, tokens, window_s
        self.max_concurrent, self.overload_status = max_concurrent, overload_status
        self.latency_s, self.retry_after, self.fill = latency_s, retry_after, fill
        self.log: list[Hit] = []
        self.counts: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._accepted: deque[tuple[float, int]] = deque()  # (arrival, tokens) within the window
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": outer.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if body.get("model") != outer.model:
                    self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                    return
                messages = body.get("messages") or []
                key = str(messages[-1].get("content", "")) if messages else ""
                prompt_tokens = math.ceil(sum(len(str(m.get("content", ""))) for m in messages) / 4)
                max_tokens = int(body.get("max_tokens") or 16)
                cost = prompt_tokens + max_tokens
                status, headers, hit = outer._admit(key, cost)
                if status != 200:
                    kind = "rate_limit_exceeded" if status == 429 else "overloaded"
                    self._send(status, {"error": {"message": f"{kind} (test server)", "type": kind}}, headers)
                    return
                try:
                    time.sleep(outer.latency_s)
                    text = f"answer to {key} #### 1"
                    if outer.fill:
                        text = (text + " " + "x" * (4 * max_tokens))[: 4 * max_tokens]
                    completion_tokens = math.ceil(len(text) / 4)
                    self._send(200, {
                        "id": f"c{hit}", "object": "chat.completion", "created": 0, "model": outer.model,
                        "choices": [{"index": 0, "finish_reason": "length" if outer.fill else "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens},
                    })
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _admit(self, key: str, cost: int) -> tuple[int, dict[str, str], int]:
        """Decide a request's fate on arrival: ``(status, headers, its index in the log)``."""
        with self._lock:
            now = time.time()
            index = len(self.log)
            while self._accepted and self._accepted[0][0] <= now - self.window_s:
                self._accepted.popleft()
            if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
                return self._refuse(now, key, self.overload_status, None), {}, index
            wait = self._wait(now, cost)
            if wait > 0:
                headers: dict[str, str] = {}
                retry_at = None
                if self.retry_after == "seconds":
                    headers["retry-after"] = f"{wait:.3f}"
                    retry_at = now + wait
                elif self.retry_after == "date":
                    retry_at = float(math.ceil(now + wait))
                    headers["retry-after"] = formatdate(retry_at, usegmt=True)
                return self._refuse(now, key, 429, headers.get("retry-after"), retry_at), headers, index
            self._accepted.append((now, cost))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.counts[200] += 1
            self.log.append(Hit(now, 200, key))
            return 200, {}, index

    def _wait(self, now: float, cost: int) -> float:
        """Seconds until the window has room for one more request of ``cost`` tokens (0: now)."""
        wait = 0.0
        if self.limit_requests is not None and len(self._accepted) >= self.limit_requests:
            oldest = self._accepted[len(self._accepted) - self.limit_requests][0]
            wait = max(wait, oldest + self.window_s - now)
        if self.limit_tokens is not None:
            used = sum(c for _, c in self._accepted)
            for arrival, c in self._accepted:  # the oldest leave first
                if used + cost <= self.limit_tokens:
                    break
                used -= c
                wait = max(wait, arrival + self.window_s - now)
        return wait

    def _refuse(self, now: float, key: str, status: int, header: str | None, retry_at: float | None = None) -> int:
        self.counts[status] += 1
        self.log.append(Hit(now, status, key, header, retry_at))
        return status

    def overloads(self) -> int:
        """Requests answered 429 or 503."""
        return self.counts[429] + self.counts[503]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
