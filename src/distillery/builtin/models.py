"""Names of the models shipped with distillery, and how model names resolve."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
BUILTIN_MODELS = ("teacher", "student")


def builtin_model_path(name: str) -> Path:
    """The folder of a shipped model (``"teacher"`` or ``"student"``, with or without the
    ``builtin:`` prefix a recipe uses).

    Raises:
        FileNotFoundError: no such shipped model.
    """
    name = name.removeprefix("builtin:")
    path = MODELS_DIR / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no built-in model {name!r} (have: {', '.join(BUILTIN_MODELS)}) at {path}")
    return path


def resolve_model(model: str, base_dir: str | Path | None = None) -> str:
    """What to pass to ``from_pretrained`` for a recipe's model name.

    ``builtin:<name>`` -> the shipped folder; an existing path (absolute, or relative to
    ``base_dir`` or the current folder) -> that folder; anything else -> unchanged (a Hub name).
    """
    if model.startswith("builtin:"):
        return str(builtin_model_path(model.removeprefix("builtin:")))
    candidate = Path(model).expanduser()
    if not candidate.is_absolute() and base_dir is not None and (Path(base_dir) / candidate).exists():
        return str(Path(base_dir) / candidate)
    if candidate.exists():
        return str(candidate)
    return model
