"""Shared test helpers: building the tiny GSM8K model, running a real `transformers serve`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `transformers serve` process on 127.0.0.1 serving one local model."""

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
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError("transformers serve did not start in 120 s")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def completions_served(self) -> int:
        """Chat-completion requests the server has answered (from its access log)."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1\.1" 200', text))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `distillery` command; return the completed process (never raises on exit status)."""
    return subprocess.run(
        [str(VENV_BIN / "distillery"), *args], capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, **(env or {})), cwd=REPO,
    )
