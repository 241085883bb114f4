"""Shared test helpers: building the tiny GSM8K model, running a real `transformers serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

# The shared data: $DISTILLERY_DATA, else ../shared/data beside the checkout, else /work/shared/data
# (a clean clone elsewhere, e.g. /tmp/x, looks beside the original checkout).
SHARED = Path(os.environ.get("DISTILLERY_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
GSM8K_TRAIN = SHARED / "gsm8k" / "train.jsonl"
GSM8K_TEST = SHARED / "gsm8k" / "test.jsonl"
REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def build_tiny_gsm8k_model(folder: Path, steps: int = 200, seed: int = 0) -> Path:
    """A tiny Llama (~0.2M parameters) with a BPE tokenizer trained on GSM8K train, briefly
    trained on GSM8K chat transcripts so it emits `#### n` answers and an end token."""
    import torch

    from distillery.builtin.modelling import build_llama, save_model, train_tokenizer

    rows = read_jsonl(GSM8K_TRAIN, 2000)
    tok = train_tokenizer([r["question"] + "\n" + r["answer"] for r in rows], vocab_size=1024)
    model = build_llama(tok, seed=seed, hidden=64, layers=2, heads=4)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}], tokenize=False
        )
        for r in rows
    ]
    enc = tok(texts, truncation=True, max_length=192, padding=True, return_tensors="pt", add_special_tokens=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (8,), generator=gen)
        ids, mask = enc["input_ids"][idx], enc["attention_mask"][idx]
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return save_model(model, tok, folder)


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that prints no traceback when a client hangs up before its answer
    is written (a test's client that gave up on purpose), and accepts a burst of connections
    (a listen backlog of 128, not 5: a client that opens its whole pool at once would otherwise
    see connections dropped and retried a second later)."""

    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingProxy:
    """A reverse proxy on 127.0.0.1 in front of a server, counting the chat completions it
    answered with 200. The count is raised before the answer is passed on, so by the time a
    client has its response the count includes it (no log read, nothing to flush)."""

    def __init__(self, upstream_port: int) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler

        self.completions = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if self.command == "POST" and self.path.endswith("/chat/completions") and answer.status == 200:
                    with lock:
                        outer.completions += 1
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Server:
    """A real `transformers serve` process on 127.0.0.1 serving one local model, reached
    through a :class:`CountingProxy` (``base_url`` is the proxy's)."""

    def __init__(self, model: Path, log: Path) -> None:
        self.model = str(model)
        self.port = free_port()
        self.log_path = log
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(log.parent / "hf-cache"), PYTHONUNBUFFERED="1")
        (log.parent / "hf-cache").mkdir(exist_ok=True)
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "transformers"), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port),
             "--device", "cpu", "--log-level", "info"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.time() + 300  # room for a loaded machine
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        else:
            raise RuntimeError("transformers serve did not start in 300 s")
        self.proxy = CountingProxy(self.port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/v1"

    def completions_served(self) -> int:
        """Chat-completion requests the server has answered with 200 (counted by the proxy)."""
        return self.proxy.completions

    def stop(self) -> None:
        self.proxy.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def run_pipeline(recipe, out: Path) -> tuple[dict, list[dict], list[dict]]:
    """Run ``recipe`` into ``out``; return ``(report, accepted records, rejected records)`` (the
    dataset's columns start with the common record fields)."""
    import pyarrow.parquet as pq

    from distillery.pipeline.runner import Pipeline
    from distillery.records import RECORD_FIELDS

    report = Pipeline(recipe, progress=False).run()
    accepted = pq.read_table(out / "accepted.parquet")
    rejected = pq.read_table(out / "rejected.parquet")
    assert accepted.column_names[: len(RECORD_FIELDS)] == list(RECORD_FIELDS)
    return report, accepted.to_pylist(), rejected.to_pylist()


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `distillery` command; return the completed process (never raises on exit status)."""
    return subprocess.run(
        [str(VENV_BIN / "distillery"), *args], capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, **(env or {})), cwd=REPO,
    )
