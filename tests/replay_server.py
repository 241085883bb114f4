"""A replay teacher: a real local HTTP server that speaks the OpenAI protocol
(``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``) and answers with hand-written
responses keyed by the prompt.

No capable model runs on this machine, so the strategies' prompting, parsing and filtering are
tested against the shapes real models give — good answers, malformed JSON, refusals,
near-duplicates, prose around a list — written by hand in the tests. This fakes only the
model's *outputs*; the HTTP client, retries, cache and pipeline are the real ones.

Rules are ``(pattern, answer)`` pairs tried in order against the request's text (every
message's content joined by newlines, or a raw completion's prompt): ``pattern`` is a regular
expression searched for; ``answer`` is a string, a list of strings (picked by the request's
``seed`` modulo its length, so sample ``i`` of a prompt gets answer ``i``), or a callable
``(text, body) -> str``. A request no rule matches gets ``default`` (or HTTP 400 when it is
``None``). Token counts are whitespace-separated words; an answer longer than ``max_tokens``
words comes back cut with ``finish_reason: length``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.helpers import QuietHTTPServer

Answer = str | list[str] | Callable[[str, dict], str]


def request_text(body: dict) -> str:
    """The text a rule is matched against."""
    if "prompt" in body:
        return str(body["prompt"])
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


class ReplayTeacher:
    """Serves model ``model`` on 127.0.0.1 (a free port) until :meth:`close`.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1``.
        log: every request body with the answer given, in arrival order.
        unmatched: texts of requests no rule matched.
    """

    def __init__(self, rules: list[tuple[str, Answer]], model: str = "replay-teacher", default: str | None = "I'm not sure.") -> None:
        self.rules = [(re.compile(p, re.S), a) for p, a in rules]
        self.model = model
        self.default = default
        self.log: list[tuple[dict, str | None]] = []
        self.unmatched: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": outer.model, "object": "model", "owned_by": "replay"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if body.get("model") != outer.model:
                    self._send(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
                    return
                text = request_text(body)
                answer = outer.answer(text, body)
                with outer._lock:
                    outer.log.append((body, answer))
                if answer is None:
                    self._send(400, {"error": {"message": "no replay rule matches this prompt"}})
                    return
                words = answer.split(" ")
                limit = int(body.get("max_tokens") or 10**9)
                finish = "stop"
                if len(answer.split()) > limit:
                    answer, finish = " ".join(words[:limit]), "length"
                usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(answer.split()),
                         "total_tokens": len(text.split()) + len(answer.split())}
                if self.path.endswith("/chat/completions"):
                    choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}
                    obj = "chat.completion"
                elif self.path.endswith("/completions"):
                    choice = {"index": 0, "text": answer, "finish_reason": finish, "logprobs": None}
                    obj = "text_completion"
                else:
                    self._send(404, {"error": {"message": "not found"}})
                    return
                self._send(200, {"id": f"replay-{len(outer.log)}", "object": obj, "created": 0, "model": outer.model,
                                 "choices": [choice], "usage": usage})

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, text: str, body: dict[str, Any]) -> str | None:
        """The answer the rules give for ``text`` (``None``: no rule and no default)."""
        for pattern, answer in self.rules:
            if pattern.search(text):
                if callable(answer):
                    return answer(text, body)
                if isinstance(answer, list):
                    return answer[int(body.get("seed") or 0) % len(answer)]
                return answer
        with self._lock:
            self.unmatched.append(text)
        return self.default

    def requests(self, pattern: str | None = None) -> list[dict]:
        """Request bodies received (whose text matches ``pattern``, if given)."""
        with self._lock:
            bodies = [b for b, _ in self.log]
        if pattern is None:
            return bodies
        rx = re.compile(pattern, re.S)
        return [b for b in bodies if rx.search(request_text(b))]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ReplayTeacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
