"""A load-test endpoint: an OpenAI-compatible server with a fixed latency and a fixed number of slots.

It models a serving engine whose scheduler runs at most ``slots`` requests at once: every
completion request takes one slot (an ``asyncio.Semaphore``; requests beyond ``slots`` wait in
the server's queue, first come first served), holds it for ``latency`` seconds, and answers a
small fixed OpenAI-shaped body (a few words, ``usage``, ``finish_reason: "stop"``). Its ideal
throughput is therefore ``slots / latency`` requests/s for a client that keeps at least
``slots`` requests in flight, and ``C / latency`` for a client with concurrency ``C < slots``.

The server's own CPU per request is kept low because it shares the machine with the client being
measured: the request body is read but never parsed, the answers are encoded once at start-up,
and access logging is off.

Endpoints:

- ``GET /v1/models``: the one model (``--model``).
- ``POST /v1/chat/completions``: ``choices[0].message.content``; a request whose ``messages``
  is empty is refused (400, not counted as served), as a real server does.
- ``POST /v1/completions``: ``choices[0].text``.
- ``GET /stats``: ``{"requests": total completion requests answered, "refused": 400s, "in_flight": now,
  "peak_in_flight": most at once, "window_requests", "first_start", "first_arrival",
  "last_end"}``. The window covers the requests since the last ``POST /stats/reset`` (times in
  seconds on the machine's monotonic clock, ``time.monotonic()``): ``first_arrival`` is when
  its first request was read, ``first_start`` the earliest moment one of its requests' connections was
  accepted (or the request read, on a connection older than the window), ``last_end`` when its
  last answer was sent. ``window_requests / (last_end - first_start)`` is the throughput the
  server saw, counting from the client's first connection, so a client that prepares many
  requests before sending any does not hide that time. ``requests`` is never reset.
- ``POST /stats/reset``: starts a new window (and resets ``peak_in_flight``).

Run it as a process (it prints the port on stdout's first line, then serves until killed):

    python benchmarks/loadtest_server.py --port 0 --latency 0.2 --slots 64

or from Python with :func:`start`, which starts that process and returns a
:class:`LoadtestServer` (``base_url``, ``stats()``, ``reset()``, ``stop()``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

CONNECTIONS = web.AppKey("connections", dict)
EMPTY_MESSAGES = b'{"error":{"message":"messages must not be empty","type":"invalid_request_error","code":400}}'
ANSWER = "The answer is 42."  # a few words: 5 completion tokens


def _bodies(model: str) -> tuple[bytes, bytes, bytes]:
    """The encoded answers: chat completion, text completion, model list."""
    usage = {"prompt_tokens": 24, "completion_tokens": 5, "total_tokens": 29}
    created = int(time.time())
    chat = {
        "id": "chatcmpl-loadtest", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": usage,
    }
    text = {
        "id": "cmpl-loadtest", "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }
    models = {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "loadtest"}]}
    return tuple(json.dumps(b, separators=(",", ":")).encode() for b in (chat, text, models))  # type: ignore[return-value]


def make_app(latency: float, slots: int, model: str = "loadtest") -> web.Application:
    """The aiohttp application: ``slots`` concurrent requests, each held ``latency`` seconds.

    Args:
        latency: seconds each completion request holds its slot (>= 0).
        slots: requests served at once (>= 1); more wait in the queue.
        model: the model name answered and listed.
    """
    if slots < 1 or latency < 0:
        raise ValueError("slots must be >= 1 and latency >= 0")
    chat_body, text_body, models_body = _bodies(model)
    sem = asyncio.Semaphore(slots)
    clock = time.monotonic
    st = {"requests": 0, "refused": 0, "in_flight": 0, "peak_in_flight": 0, "window_requests": 0,
          "first_start": None, "first_arrival": None, "last_end": None}
    app = web.Application(client_max_size=16 * 1024 * 1024)
    connections: dict[int, float] = {}  # id(protocol) -> when its connection was accepted (see serve)
    app[CONNECTIONS] = connections
    window = [clock()]
    headers = {"Content-Type": "application/json"}

    def handler(body: bytes):
        async def handle(request: web.Request) -> web.Response:
            data = await request.read()
            if b'"messages": []' in data or b'"messages":[]' in data:
                # Curator probes rate-limit headers with an empty conversation; a real server refuses it.
                st["refused"] += 1
                return web.Response(status=400, body=EMPTY_MESSAGES, headers=headers)
            now = clock()
            if st["first_arrival"] is None:
                st["first_arrival"] = now
            # The window starts when the client opened the connection of its first request, if it
            # opened it in this window: a client that prepares many requests before it sends any
            # would otherwise hide that time.
            opened = connections.get(id(request.protocol), -1.0)
            start = opened if opened >= window[0] else now
            if st["first_start"] is None or start < st["first_start"]:
                st["first_start"] = start
            st["in_flight"] += 1
            if st["in_flight"] > st["peak_in_flight"]:
                st["peak_in_flight"] = st["in_flight"]
            try:
                async with sem:
                    await asyncio.sleep(latency)
            finally:
                st["in_flight"] -= 1
            st["requests"] += 1
            st["window_requests"] += 1
            st["last_end"] = clock()
            return web.Response(body=body, headers=headers)
        return handle

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=models_body, headers=headers)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(st)

    async def reset(request: web.Request) -> web.Response:
        window[0] = clock()
        st.update(window_requests=0, first_start=None, first_arrival=None, last_end=None,
                  peak_in_flight=st["in_flight"])
        return web.json_response(st)

    app.router.add_post("/v1/chat/completions", handler(chat_body))
    app.router.add_post("/v1/completions", handler(text_body))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", reset)
    return app


def serve(port: int, latency: float, slots: int, model: str, host: str = "127.0.0.1",
          exit_with_parent: bool = False) -> None:
    """Serve until killed (SIGTERM or SIGINT: a clean exit, status 0), or with
    ``exit_with_parent`` until the parent process is gone; print the bound port on stdout's
    first line once listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = make_app(latency, slots, model)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        connections, server, clock = app[CONNECTIONS], runner.server, time.monotonic

        def protocol():  # called as each connection is accepted
            p = server()
            connections[id(p)] = clock()
            return p

        listener = await loop.create_server(protocol, sock=sock, backlog=4096)
        print(sock.getsockname()[1], flush=True)
        if exit_with_parent:
            parent = os.getppid()

            async def watch() -> None:  # a benchmark killed outright must not leave its server behind
                while os.getppid() == parent:
                    await asyncio.sleep(1.0)
                stop.set()

            watcher = asyncio.create_task(watch())
        await stop.wait()
        if exit_with_parent:
            watcher.cancel()
        listener.close()
        await runner.cleanup()

    asyncio.run(main())


@dataclass
class LoadtestServer:
    """A running load-test server process (see :func:`start`)."""

    process: subprocess.Popen
    port: int
    latency: float
    slots: int
    model: str
    host: str = "127.0.0.1"
    _closed: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def ideal(self) -> float:
        """``slots / latency``: the most requests/s the server can answer (inf at latency 0)."""
        return self.slots / self.latency if self.latency else float("inf")

    def _call(self, path: str, method: str = "GET") -> dict:
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        """The server's counters (``GET /stats``, see the module doc)."""
        return self._call("/stats")

    def reset(self) -> dict:
        """Start a new measuring window (``POST /stats/reset``)."""
        return self._call("/stats/reset", "POST")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        if self._closed:
            return
        self._closed = True
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LoadtestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(latency: float, slots: int, model: str = "loadtest", python: str | None = None,
          timeout_s: float = 60.0) -> LoadtestServer:
    """Start the server as a separate process on a free port of 127.0.0.1.

    Args:
        latency: seconds each request holds its slot.
        slots: requests served at once.
        model: the model name it answers to.
        python: the interpreter to run it with (default: this one; it needs aiohttp).
        timeout_s: how long to wait for it to listen.

    Raises:
        RuntimeError: the process exited or printed no port within ``timeout_s``.
    """
    cmd = [python or sys.executable, str(Path(__file__).resolve()), "--port", "0", "--latency", str(latency),
           "--slots", str(slots), "--model", model, "--exit-with-parent"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = ""
    deadline = time.monotonic() + timeout_s
    # readline blocks; the process prints the port as soon as it listens or dies (EOF).
    while not line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.isdigit():
        proc.kill()
        proc.wait()
        raise RuntimeError(f"load-test server did not start (exit {proc.returncode}, said {line!r})")
    return LoadtestServer(proc, int(line), latency, slots, model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed on stdout's first line)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds each request holds its slot")
    parser.add_argument("--slots", type=int, default=64, help="requests served at once")
    parser.add_argument("--model", default="loadtest")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process is gone")
    args = parser.parse_args()
    serve(args.port, args.latency, args.slots, args.model, args.host, args.exit_with_parent)


if __name__ == "__main__":
    main()
