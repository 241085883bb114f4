from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest

from tests import helpers


@pytest.fixture(scope="session")
def tiny_gsm8k_model(request: pytest.FixtureRequest) -> Path:
    """The tiny GSM8K model, built once (cached by pytest across sessions, keyed by the builder's code)."""
    from distillery.builtin import modelling

    code = inspect.getsource(helpers.build_tiny_gsm8k_model) + inspect.getsource(modelling)
    key = hashlib.sha256(code.encode()).hexdigest()[:12]
    folder = Path(request.config.cache.mkdir(f"tiny-gsm8k-{key}"))
    if not (folder / "model.safetensors").exists():
        helpers.build_tiny_gsm8k_model(folder)
    return folder


@pytest.fixture(scope="session")
def gsm8k_server(tiny_gsm8k_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real OpenAI-compatible server (`transformers serve`) with the tiny GSM8K model."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    server = helpers.Server(tiny_gsm8k_model, log)
    yield server
    server.stop()
