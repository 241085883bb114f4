"""The one registry of everything pluggable, keyed by kind and name.

Every pluggable piece of distillery — verifiers, filters, deduplication, decontamination
methods, generation strategies, executors, backends, seed formats and sources, benchmarks,
experiments, training methods — is registered here with the same decorator::

    from typing import Literal
    from distillery.registry import register
    from distillery.pipeline import Check, Stage, StageConfig

    @register("filter")
    class NoURLConfig(StageConfig):
        type: Literal["no_url"] = "no_url"          # the name, written once

        def build(self, ctx):
            return NoURL(self)

A config class is registered under the value(s) of its discriminator field (``type``, or
``strategy`` for generation strategies), so the name is written once; anything else is
registered under the name given, or its own ``name`` / ``__name__``.

Lookups are lazy and happen when they are needed — recipes build their unions when a recipe is
validated (:func:`config_field`), not when :mod:`distillery.recipe` is imported — so code
registered in a notebook or a plugin works whatever the import order. A kind's built-in
modules (:data:`BUILTINS`) are imported on its first lookup, and third-party packages are
loaded once through the entry-point group :data:`ENTRY_POINT_GROUP`::

    # a plugin's pyproject.toml
    [project.entry-points."distillery.plugins"]
    my_filters = "my_package.filters"      # a module (its decorators register), or a function to call

Errors: :class:`UnknownName` (a :class:`~distillery.errors.RecipeError`) lists the registered
names and the closest match; :class:`PluginError` names the entry point that failed to load.
"""

from __future__ import annotations

import difflib
import importlib
import threading
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from distillery.errors import DistilleryError, RecipeError

T = TypeVar("T")

ENTRY_POINT_GROUP = "distillery.plugins"

#: Every kind, with the modules that register its built-in members (imported on the kind's first lookup).
BUILTINS: dict[str, tuple[str, ...]] = {
    "verifier": (
        "distillery.verify.math_answer",
        "distillery.verify.python_program",
        "distillery.verify.judge",
        "distillery.verify.consistency",
        "distillery.verify.unit_tests",
    ),
    "filter": (
        "distillery.filter.length",
        "distillery.filter.repetition",
        "distillery.filter.language",
        "distillery.filter.perplexity",
        "distillery.filter.difficulty",
    ),
    "dedup": ("distillery.dedup.exact", "distillery.dedup.minhash", "distillery.dedup.semantic"),
    "decontamination": ("distillery.decontaminate.stage",),
    "strategy": (
        "distillery.generate.rejection_sampling",
        "distillery.generate.curate",
        "distillery.generate.self_instruct",
        "distillery.generate.evol_instruct",
        "distillery.generate.magpie",
        "distillery.generate.persona",
        "distillery.generate.attributes",
        "distillery.generate.rephrase",
        "distillery.generate.backtranslation",
        "distillery.generate.chan",
        "distillery.generate.code_tests",
        "distillery.generate.autoif",
        "distillery.generate.constitutional",
        "distillery.generate.ai_feedback",
        "distillery.generate.process_labels",
    ),
    "executor": ("distillery.pipeline.executors.local", "distillery.pipeline.executors.ray"),
    "backend": ("distillery.backends.openai_compat", "distillery.backends.transformers_local"),
    "seed_format": ("distillery.io.readers",),
    "seed_source": ("distillery.builtin.sources",),
    "benchmark": ("distillery.decontaminate.benchmarks",),
    "experiment": ("distillery.experiments.filter_lift", "distillery.experiments.collapse", "distillery.experiments.star"),
    "training_method": ("distillery.train.methods",),
    "arith_template": (
        "distillery.builtin.arith.frames",
        "distillery.builtin.arith.steps",
        "distillery.builtin.arith.steps_more",
    ),
}

#: The field of a kind's config classes that names them (default ``type``).
DISCRIMINATOR: dict[str, str] = {"strategy": "strategy"}

_entries: dict[str, dict[str, Any]] = {kind: {} for kind in BUILTINS}
_loaded: set[str] = set()
_plugins_loaded = False
_plugins_done: set[str] = set()  # entry points loaded (each is loaded once, even if a later one fails)
_version = 0
_lock = threading.RLock()


class UnknownName(RecipeError):
    """A name that nothing is registered under, for its kind."""


class PluginError(DistilleryError):
    """A plugin (an entry point of :data:`ENTRY_POINT_GROUP`) failed to load."""


def discriminator(kind: str) -> str:
    """The field that names a config class of ``kind`` (``type``, or ``strategy`` for strategies)."""
    return DISCRIMINATOR.get(kind, "type")


def _check_kind(kind: str) -> None:
    if kind not in _entries:
        raise ValueError(f"unknown registry kind {kind!r}; kinds: {', '.join(sorted(_entries))}")


def names_of(obj: Any, kind: str) -> tuple[str, ...]:
    """The names ``obj`` is registered under when none is given.

    A pydantic config class: the value(s) of its discriminator field's ``Literal`` (or its
    default); anything else: its ``name`` attribute, else ``__name__``.

    Raises:
        ValueError: no name can be found.
    """
    fields = getattr(obj, "model_fields", None)
    key = discriminator(kind)
    if fields is not None and key in fields:
        values = typing.get_args(fields[key].annotation)
        if values and all(isinstance(v, str) for v in values):
            return tuple(values)
        if isinstance(fields[key].default, str):
            return (fields[key].default,)
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return (name,)
    name = getattr(obj, "__name__", None)
    if isinstance(name, str) and name:
        return (name,)
    raise ValueError(f"cannot tell the name of {obj!r}; pass register({kind!r}, name=...)")


def _same_origin(a: Any, b: Any) -> bool:
    """Two objects defined at the same place (a re-run notebook cell or a reloaded module)."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    ) and getattr(a, "__qualname__", None) is not None


def add(kind: str, name: str, obj: Any, *, replace: bool = False) -> None:
    """Register ``obj`` as ``name`` of ``kind`` (the non-decorator form of :func:`register`).

    Registering the same object again, or an object defined at the same place (a re-run
    notebook cell, a reloaded module), replaces the entry silently.

    Raises:
        ValueError: an unknown kind, an empty name, or a name already taken by another
            object and ``replace`` is false.
    """
    _check_kind(kind)
    if not name:
        raise ValueError(f"{kind}: the name must not be empty")
    global _version
    with _lock:
        current = _entries[kind].get(name)
        if current is not None and current is not obj and not replace and not _same_origin(current, obj):
            raise ValueError(
                f"{kind} {name!r} is already registered ({_where(current)}); pass replace=True to replace it"
            )
        _entries[kind][name] = obj
        _version += 1


def register(kind: str, name: str | None = None, *, replace: bool = False) -> Callable[[T], T]:
    """Decorator: register the decorated class or function under ``kind``.

    Args:
        kind: one of :data:`BUILTINS`' keys.
        name: the name; default from the object (see :func:`names_of`).
        replace: replace an entry of another origin with the same name.

    Raises:
        ValueError: see :func:`add`.
    """

    def wrap(obj: T) -> T:
        for n in (name,) if name else names_of(obj, kind):
            add(kind, n, obj, replace=replace)
        return obj

    return wrap


def remove(kind: str, name: str) -> None:
    """Remove ``name`` from ``kind`` (no-op when absent)."""
    _check_kind(kind)
    global _version
    with _lock:
        if _entries[kind].pop(name, None) is not None:
            _version += 1


def _ensure(kind: str) -> None:
    _check_kind(kind)
    if kind in _loaded and _plugins_loaded:
        return
    with _lock:
        if kind not in _loaded:
            _loaded.add(kind)  # before importing: a module may look its own kind up while it registers
            try:
                for module in BUILTINS[kind]:
                    importlib.import_module(module)
            except BaseException:
                _loaded.discard(kind)
                raise
        load_plugins()


def load_plugins() -> list[str]:
    """Load every entry point of :data:`ENTRY_POINT_GROUP` (each once); return the names loaded now.

    An entry point names a module (importing it registers its members) or a callable taking
    no arguments (called once).

    Raises:
        PluginError: an entry point cannot be loaded or its function fails (names it).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    with _lock:
        if _plugins_loaded:
            return []
        _plugins_loaded = True
        from importlib.metadata import entry_points

        loaded = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in _plugins_done:
                continue
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    obj()
            except Exception as e:
                _plugins_loaded = False
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}) failed to load: "
                    f"{type(e).__name__}: {e}"
                ) from e
            _plugins_done.add(ep.value)
            loaded.append(ep.name)
        return loaded


def get(kind: str, name: str) -> Any:
    """The object registered as ``name`` of ``kind``.

    Raises:
        UnknownName: nothing registered under ``name`` (lists what is, and the closest match).
    """
    _ensure(kind)
    try:
        return _entries[kind][name]
    except KeyError:
        raise UnknownName(unknown_message(kind, name)) from None


def unknown_message(kind: str, name: Any) -> str:
    """``unknown <kind> 'x' (did you mean 'y'?); registered: a, b, c``."""
    have = names(kind)
    close = difflib.get_close_matches(str(name), have, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind.replace('_', ' ')} {name!r}{hint}; registered: {', '.join(have) or 'none'}"


def names(kind: str) -> list[str]:
    """The names registered under ``kind``, sorted."""
    _ensure(kind)
    return sorted(_entries[kind])


def items(kind: str) -> dict[str, Any]:
    """A copy of ``kind``'s entries, name -> object, in registration order."""
    _ensure(kind)
    return dict(_entries[kind])


def version() -> int:
    """A counter bumped by every change (lets caches built from entries notice)."""
    return _version


def kinds() -> list[str]:
    """Every kind, sorted."""
    return sorted(_entries)


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(obj)


# -- recipe fields whose type is chosen from the registry when a recipe is validated ----------
class RegistryField:
    """``Annotated`` metadata of a field that takes any config class registered under ``kind``.

    Made by :func:`config_field`; :meth:`validate` picks the class by the mapping's
    discriminator (``type``, or ``strategy``), at validation time.
    """

    def __init__(self, kind: str, default: str | None = None) -> None:
        _check_kind(kind)
        self.kind = kind
        self.default = default
        self.key = discriminator(kind)

    def member(self, value: Any) -> Any:
        """The registered class ``value`` (a mapping) selects, or ``None``."""
        tag = value.get(self.key, self.default) if isinstance(value, dict) else None
        if not isinstance(tag, str):
            return None
        _ensure(self.kind)
        return _entries[self.kind].get(tag)

    def validate(self, value: Any) -> Any:
        """Validate ``value`` (a mapping, or an already built config) as a config of :attr:`kind`.

        Raises:
            pydantic_core.PydanticCustomError: no or an unknown discriminator; errors of the
                selected class's validation keep their locations.
        """
        from pydantic import BaseModel
        from pydantic_core import PydanticCustomError

        if isinstance(value, BaseModel):
            if type(value) in items(self.kind).values():
                return value
            raise PydanticCustomError(
                "registry_type", "{cls} is not a registered {kind}", {"cls": type(value).__name__, "kind": self.kind}
            )
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "registry_mapping",
                "expected a mapping with a {key} (one of {expected_tags})",
                {"key": self.key, "expected_tags": ", ".join(repr(n) for n in names(self.kind))},
            )
        tag = value.get(self.key, self.default)
        expected = ", ".join(repr(n) for n in names(self.kind))
        if tag is None:
            raise PydanticCustomError(
                "union_tag_not_found", "{key} is missing (one of {expected_tags})",
                {"key": self.key, "discriminator": self.key, "expected_tags": expected},
            )
        cls = self.member(value)
        if cls is None:
            close = difflib.get_close_matches(str(tag), names(self.kind), n=1)
            raise PydanticCustomError(
                "union_tag_invalid", "unknown {kind} {shown}{hint}; expected one of {expected_tags}",
                {"kind": self.kind.replace("_", " "), "key": self.key, "tag": tag, "shown": repr(tag),
                 "expected_tags": expected,
                 "hint": f" (did you mean {close[0]!r}?)" if close else ""},
            )
        return cls.model_validate(value)


def config_field(kind: str, default: str | None = None) -> Any:
    """A pydantic annotation accepting any config class registered under ``kind``.

    The class is chosen, when a recipe is validated, by the mapping's discriminator
    (``type``; ``strategy`` for strategies; ``default`` when the mapping has none), from what
    is registered then. Dumps serialise the chosen class's own fields.
    """
    from pydantic import BaseModel, BeforeValidator, SerializeAsAny

    marker = RegistryField(kind, default)
    return Annotated[SerializeAsAny[BaseModel], BeforeValidator(marker.validate), marker]
