"""A real HTTP server that speaks the OpenAI chat-completions protocol and misbehaves on
purpose: 429 storms, 5xx errors, hangs, garbled bodies, answers without choices, empty and
truncated answers. Used only for faults a real model server cannot be made to produce on
demand, and to replay hand-written answers of a capable model."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

from tests.helpers import QuietHTTPServer


class FaultServer:
    """Serves model ``model``. ``script(n, body)`` decides the fate of the n-th chat request
    (0-based) and returns one of: ``("ok", text)``, ``("status", code)``, ``("hang", seconds)``,
    ``("empty", None)``, ``("length", text)``, ``("garbled", None)`` (a 200 whose body is not
    JSON), ``("nochoices", None)`` (a 200 JSON body without ``choices``). ``log`` keeps every
    request body with its fate, in arrival order."""

    def __init__(self, script, model: str = "fault-model") -> None:
        self.script = script
        self.model = model
        self.requests = 0
        self.outcomes: Counter = Counter()
        self.log: list[tuple[dict, str]] = []
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
                if body.get("model") != outer.model:
                    self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                    return
                with outer._lock:
                    n = outer.requests
                    outer.requests += 1
                kind, arg = outer.script(n, body)
                with outer._lock:
                    outer.outcomes[kind] += 1
                    outer.log.append((body, kind))
                if kind == "garbled":
                    data = b'{"id": "x", "choices": [{"message": {"content": "cut off'
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if kind == "nochoices":
                    self._send(200, {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": outer.model})
                    return
                if kind == "status":
                    headers = {"retry-after": "0.01"} if arg == 429 else {}
                    self._send(arg, {"error": {"message": f"injected {arg}"}}, headers)
                    return
                if kind == "hang":
                    time.sleep(arg)
                    kind, arg = "ok", "late answer #### 1"
                text = "" if kind == "empty" else arg
                finish = "length" if kind == "length" else "stop"
                self._send(200, {
                    "id": f"c{n}", "object": "chat.completion", "created": 0, "model": outer.model,
                    "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                })

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
