"""Recipes: a YAML file (or Python object) saying what a run does.

Every section is a pydantic model that forbids unknown keys, so a typo, a wrong type or a
missing file is reported with its key path and a hint before any work starts::

    recipe.yaml: teacher.sampling.temprature: unknown key (did you mean 'temperature'?)

A recipe is a thin layer over the Python API: ``Recipe.from_yaml(path)`` or ``Recipe(...)``
then :class:`distillery.pipeline.runner.Pipeline`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distillery import registry
from distillery.backends.config import SamplingConfig, TeacherConfig  # noqa: F401 (part of this module's API)
from distillery.errors import RecipeError
from distillery.pipeline.budget import BudgetConfig
from distillery.registry import RegistryField, config_field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeedsConfig(_Strict):
    """Where seeds come from.

    Attributes:
        path: a JSONL(.gz) / Parquet / CSV file, a saved ``datasets`` folder, a Hub dataset
            name (with ``format: hub``) or ``builtin:<name>`` (e.g. ``builtin:arith``);
            relative paths are resolved against the recipe's folder.
        format: ``auto`` (from the name) or a registered seed format (jsonl, parquet, csv,
            hf, hub, builtin, or one a plugin adds).
        fields: renames: seed field name used in templates and stages -> source column.
        id_field: the seed field that holds a stable id, if any.
        response_field: the seed field holding an existing response (makes ``curate`` the
            default strategy: generation is skipped and the rest of the pipeline runs on it).
        response_template: instead of ``response_field``, a Jinja2 template over the seed's
            fields that makes the response (e.g. ``"{{ answer.split('####')[0] | trim }}"``).
        limit: use at most this many rows.
        shuffle_seed: shuffle rows with this seed before ``limit`` (reads the whole source).
        split, subset: split and configuration of a ``datasets`` folder or Hub dataset.
        options: options of a ``builtin:`` source (e.g. ``{n: 1000, split: train, seed: 0}``).
    """

    path: str = Field(min_length=1)
    format: str = "auto"
    fields: dict[str, str] = {}
    id_field: str | None = "id"
    response_field: str | None = None
    response_template: str | None = None
    limit: int | None = Field(None, ge=1, strict=True)
    shuffle_seed: int | None = None
    split: str | None = None
    subset: str | None = None
    options: dict[str, Any] = {}

    @field_validator("format")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value != "auto" and value not in registry.names("seed_format"):
            raise ValueError(registry.unknown_message("seed_format", value))
        return value

    @property
    def local(self) -> bool:
        """Whether ``path`` names a local file or folder (resolved against the recipe's folder)."""
        if self.format == "auto":
            return not self.path.startswith("builtin:")
        return registry.get("seed_format", self.format).local


class FewShotTurn(_Strict):
    """One worked example shown before the question."""

    user: str
    assistant: str


class PromptConfig(_Strict):
    """The chat messages sent for each seed (Jinja2 templates over the seed's fields)."""

    system: str | None = None
    template: str = "{{ question }}"
    few_shot: list[FewShotTurn] = []


class OutputConfig(_Strict):
    """The run directory and what is written there.

    Attributes:
        dir: the run directory (relative to the current directory, not the recipe).
        jsonl: also write ``accepted.jsonl`` and ``rejected.jsonl``.
        batch_size: seeds per batch (1 to 1,000,000); each finished batch is checkpointed.
        cache: the response cache: a folder (default ``<dir>/cache/``, 16 SQLite files) or a
            ``.sqlite`` file; share one between runs to reuse responses.
    """

    dir: str = "runs/default"
    jsonl: bool = False
    batch_size: int = Field(64, ge=1, le=1_000_000, strict=True)
    cache: str | None = None


class ReportConfig(_Strict):
    """What the report measures beyond the funnel.

    Attributes:
        diversity_sample: accepted responses sampled for the diversity metrics (0: none).
        embedding_model: sentence-transformers model for the embedding-based diversity metrics
            (``default``: the packaged all-MiniLM-L6-v2; ``null``: lexical metrics only).
    """

    diversity_sample: int = Field(200, ge=0)
    embedding_model: str | None = "default"


class PricingConfig(_Strict):
    """Price table for the cost estimate, per million tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0
    currency: str = "USD"


class Recipe(_Strict):
    """A whole run: seeds, prompt, teacher, generation strategy, verifiers, filters, dedup,
    decontamination, executor, output and budget (``budget:``, a hard stop:
    :mod:`distillery.pipeline.budget`). See the README for a commented example. ``name``,
    ``description`` and ``license`` (an SPDX id such as ``cc-by-4.0``; ``other`` by default: the
    seeds' and the teacher's terms apply) go on the dataset card and not into the data hash.

    The entries of ``generation`` (by ``strategy``), ``verifiers``, ``filters``, ``dedup``,
    ``decontamination`` and ``executor`` (by ``type``) are validated against what is
    registered (:mod:`distillery.registry`) when the recipe is validated, so stages and
    strategies defined anywhere — a plugin, a notebook — can be named.

    ``generation.strategy`` defaults to ``curate`` when the seeds carry responses
    (``seeds.response_field`` / ``response_template``), else to ``rejection_sampling``;
    ``executor`` is ``local`` unless given (a name, or a mapping with ``type``).
    """

    name: str = "default"
    description: str | None = None
    license: str = Field("other", min_length=1, description="the dataset card's license")
    seeds: SeedsConfig
    prompt: PromptConfig = PromptConfig()
    teacher: TeacherConfig | None = None
    generation: config_field("strategy")  # type: ignore[valid-type]
    verifiers: list[config_field("verifier")] = []  # type: ignore[valid-type]
    filters: list[config_field("filter")] = []  # type: ignore[valid-type]
    dedup: list[config_field("dedup")] = []  # type: ignore[valid-type]
    decontamination: config_field("decontamination", default="ngram") | None = None  # type: ignore[valid-type]
    stage_order: Literal["auto", "recipe"] = "auto"
    executor: config_field("executor", default="local")  # type: ignore[valid-type]
    output: OutputConfig = OutputConfig()
    report: ReportConfig = ReportConfig()
    pricing: PricingConfig = PricingConfig()
    budget: BudgetConfig = BudgetConfig()
    base_dir: str | None = Field(None, exclude=True, description="folder relative paths resolve against")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return with_defaults(data)

    @model_validator(mode="after")
    def _teacher_when_needed(self) -> Recipe:
        if self.seeds.response_field and self.seeds.response_template:
            raise ValueError("seeds: set response_field or response_template, not both")
        try:
            strategy = self.generation.build(self)
        except RecipeError as e:
            raise ValueError(str(e)) from None
        if strategy.needs_teacher and self.teacher is None:
            raise ValueError(
                f"a teacher is needed: generation.strategy {strategy.name!r} calls one; add a teacher: section "
                "(or set seeds.response_field / response_template to curate the seeds' own responses)"
            )
        for section in ("verifiers", "filters", "dedup"):
            for i, entry in enumerate(getattr(self, section)):
                try:
                    entry.check_recipe(self, f"{section}.{i}")  # a stage's checks against the whole recipe
                except RecipeError as e:
                    raise ValueError(str(e)) from None
        return self

    def response_template(self) -> str | None:
        """The Jinja2 template that makes a response from a seed (``curate``), if the seeds carry one."""
        if self.seeds.response_template is not None:
            return self.seeds.response_template
        if self.seeds.response_field is not None:
            return "{{ " + self.seeds.response_field + " }}"
        return None

    def resolve(self, path: str) -> Path:
        """``path`` resolved against the recipe's folder (unless absolute)."""
        p = Path(path).expanduser()
        if p.is_absolute() or self.base_dir is None:
            return p
        return Path(self.base_dir) / p

    def data_hash(self) -> str:
        """sha256 (16 hex) of everything that changes the data a run produces (not output
        location, concurrency or ``seeds.limit``: see :func:`data_view`): two recipes with the
        same hash can share a run directory, and a higher limit extends a finished run."""
        return hashlib.sha256(json.dumps(data_view(self.model_dump(mode="json")), sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The recipe as YAML, with defaults filled in (the resolved recipe)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"base_dir"}), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
        """Load, validate and check the files of a recipe.

        Args:
            path: the YAML file.
            overrides: dotted keys to set after loading, e.g. ``{"seeds.limit": 10}``.

        Raises:
            RecipeError: unreadable YAML, unknown key, wrong type, missing file; the message
                names the file, the key path and a hint.
        """
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"{path}: recipe not found")
        if path.is_dir():
            raise RecipeError(f"{path}: is a folder; give the recipe's YAML file")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise RecipeError(f"{path}: cannot read the recipe: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            offset = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
            raise RecipeError(f"{path}:{line}: not valid UTF-8 at byte offset {offset} of the line "
                              f"(byte offset {e.start} of the file)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError(_yaml_error(path, e, text)) from None
        except RecursionError:
            raise RecipeError(f"{path}: not valid YAML: nested too deeply (a recipe nests a few levels)") from None
        except ValueError as e:  # PyYAML's int() of a number of more than 4300 digits
            raise RecipeError(f"{path}: not valid YAML: {str(e).splitlines()[0][:160]}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of sections (seeds, prompt, teacher, ...)")
        _check_shape(data, str(path))
        for key, value in (overrides or {}).items():
            _set_dotted(data, key, value, str(path))
        _check_shape(data, str(path))
        data["base_dir"] = str(path.resolve().parent)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> Recipe:
        """Validate a recipe given as a dict (see :meth:`from_yaml`).

        Raises:
            RecipeError: as :meth:`from_yaml`.
        """
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe is a mapping of sections (seeds, prompt, teacher, ...)")
        _check_shape(data, source)
        check_templates(data, source)
        try:
            recipe = cls.model_validate(data)
        except ValidationError as e:
            raise RecipeError(format_validation_error(e, data, source)) from None
        recipe.check_files(source)
        return recipe

    def check_files(self, source: str = "recipe") -> None:
        """Check that every local file the recipe names exists.

        Raises:
            RecipeError: naming the key and the path that was looked for.
        """
        if self.seeds.local:
            p = self.resolve(self.seeds.path)
            if not _exists(p, f"{source}: seeds.path"):
                hint = " (for a Hugging Face Hub dataset set seeds.format: hub)" if "/" in self.seeds.path else ""
                raise RecipeError(f"{source}: seeds.path: file not found: {p}{hint}")
        if self.teacher and self.teacher.backend == "transformers":
            model = self.teacher.model
            local = self.resolve(model)
            if model.startswith((".", "/", "~")) and not _exists(local, f"{source}: teacher.model"):
                raise RecipeError(f"{source}: teacher.model: folder not found: {local}")
        if self.decontamination is not None and hasattr(self.decontamination, "benchmarks"):
            for i, bench in enumerate(self.decontamination.benchmarks):
                bpath = getattr(bench, "path", None)
                if bpath and not _exists(self.resolve(bpath), f"{source}: decontamination.benchmarks.{i}.path"):
                    raise RecipeError(
                        f"{source}: decontamination.benchmarks.{i}.path: file not found: {self.resolve(bpath)}"
                    )


def with_defaults(data: Any) -> Any:
    """A recipe mapping with the defaults that depend on other keys filled in: the strategy
    (``curate`` when the seeds carry responses, else ``rejection_sampling``) and the executor
    (``local``; a bare name becomes ``{type: name}``)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    seeds = data.get("seeds")
    curating = isinstance(seeds, dict) and (seeds.get("response_field") or seeds.get("response_template"))
    generation = data.get("generation")
    if generation is None:
        generation = {}
    if isinstance(generation, dict) and "strategy" not in generation:
        generation = {"strategy": "curate" if curating else "rejection_sampling", **generation}
    data["generation"] = generation
    executor = data.get("executor", "local")
    data["executor"] = {"type": executor} if isinstance(executor, str) else executor
    return data


# settings of how a model is reached, not of what it is asked: they may change between a run and its resume
_OPERATIONAL_KEYS = frozenset(
    {"concurrency", "timeout_s", "max_retries", "retry_budget_s", "batch_size", "api_key_env", "base_url", "workers",
     "rpm", "tpm", "adaptive_concurrency", "threads"}
)


_UNHASHED_SECTIONS = frozenset({"output", "base_dir", "description", "license", "pricing", "report", "executor", "budget"})


def data_view(dumped: dict[str, Any]) -> dict[str, Any]:
    """The part of a dumped recipe (``Recipe.model_dump(mode="json")``, or a run directory's
    ``recipe.yaml`` loaded) that decides what each batch holds, which :meth:`Recipe.data_hash`
    hashes: every section but output location, pricing, report, executor and budget, without
    the operational keys (concurrency, timeouts, URLs...) and without ``seeds.limit`` (a
    smaller limit's batches are a prefix of a larger one's), plus ``output.batch_size``."""
    data = _drop_keys({k: v for k, v in dumped.items() if k not in _UNHASHED_SECTIONS}, _OPERATIONAL_KEYS)
    if isinstance(data.get("seeds"), dict):
        data["seeds"] = {k: v for k, v in data["seeds"].items() if k != "limit"}
    data["output_batch_size"] = (dumped.get("output") or {}).get("batch_size")
    return data


def _drop_keys(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop_keys(v, keys) for v in value]
    return value


def check_templates(data: dict[str, Any], source: str = "recipe") -> None:
    """Compile each Jinja2 template of a recipe mapping and render it once with every seed field
    undefined: a syntax error, or a template that fails whatever the seed says (``{{ 1/0 }}``,
    an ``include`` with nothing to include), is refused before any work, naming its key. A
    failure that depends on a seed's values (``{{ question / 2 }}``) can show only on that
    seed's row. Values that are not text are left to the schema.

    Raises:
        RecipeError: ``<source>: <key>: ...`` (``prompt.template``, ``prompt.system``,
            ``seeds.response_template``).
    """
    import jinja2

    env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False)
    for section, name in (("prompt", "template"), ("prompt", "system"), ("seeds", "response_template")):
        node = data.get(section)
        text = node.get(name) if isinstance(node, dict) else None
        if not isinstance(text, str) or not text:
            continue
        key = f"{section}.{name}"
        try:
            env.from_string(text).render()
        except jinja2.UndefinedError:
            continue  # depends on the seed's fields
        except jinja2.TemplateSyntaxError as e:
            raise RecipeError(f"{source}: {key}: template syntax error on line {e.lineno}: {e.message}") from None
        except Exception as e:  # noqa: BLE001 (whatever a template raises is the template's fault)
            shown = str(e).splitlines()[0][:200] if str(e) else ""
            raise RecipeError(f"{source}: {key}: the template fails whatever the seed: {type(e).__name__}: {shown}") from None


def _exists(path: Path, where: str) -> bool:
    """Whether ``path`` exists; a path the system cannot even look up (too long) is an error.

    Raises:
        RecipeError: ``<where>: cannot look up <path>: <reason>``.
    """
    try:
        return path.exists()
    except OSError as e:
        raise RecipeError(f"{where}: cannot look up {str(path)[:200]}: {e.strerror or e}") from None


MAX_RECIPE_DEPTH = 32
"""Most levels of sections, lists and mappings a recipe may nest (the deepest shipped one has 5)."""


def _check_shape(data: Any, source: str) -> None:
    """Refuse, naming the key, a recipe nested more than :data:`MAX_RECIPE_DEPTH` levels or
    with a key that is not a string (YAML allows ``1: x``); iterative, so any depth is measured.

    Raises:
        RecipeError: ``<source>: <key.path>: ...``.
    """
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_RECIPE_DEPTH:
            where = ".".join(path[:3])
            raise RecipeError(f"{source}: {where}: nested more than {MAX_RECIPE_DEPTH} levels deep")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    where = ".".join([*path, str(k)])
                    raise RecipeError(f"{source}: {where}: a key must be text, got {type(k).__name__} {k!r}")
                stack.append((v, [*path, k]))
        elif isinstance(value, list):
            stack.extend((v, [*path, str(i)]) for i, v in enumerate(value))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, source: str = "recipe") -> None:
    """Set the key ``dotted`` (``teacher.model``, ``verifiers.0.reference``) of ``data`` to ``value``.

    A number indexes a list (``len`` appends); missing sections are made on the way (a list
    when the next part is a number).

    Raises:
        RecipeError: an empty key part, an index that is not a number or out of range, or a
            path through a value that is not a section (``seeds.path.x``), naming the key.
    """
    parts = dotted.split(".")
    where = f"{source}: --set {dotted[:120]}"
    if any(not p.strip() for p in parts):
        raise RecipeError(f"{where}: a key path is names joined by dots (seeds.limit, verifiers.0.reference)")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        walked = ".".join(parts[:i]) or "(the recipe)"
        if isinstance(node, list):
            if not part.isdigit():
                raise RecipeError(f"{where}: {walked} is a list; {part!r} is not an index (0 to {len(node)})")
            index = int(part)
            if index > len(node):
                raise RecipeError(f"{where}: {walked} has {len(node)} entries; the index can be 0 to {len(node)} "
                                  f"({len(node)} appends one)")
            if index == len(node):
                node.append(value if last else ([] if parts[i + 1].isdigit() else {}))
                if last:
                    return
            elif last:
                node[index] = value
                return
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return
            if node.get(part) is None:
                node[part] = [] if parts[i + 1].isdigit() else {}
            node = node[part]
        else:
            shown = repr(node)[:60]
            raise RecipeError(f"{where}: {walked} is a {type(node).__name__} ({shown}), not a section: it has no key {part!r}")


def _yaml_error(path: Path, e: yaml.YAMLError, text: str = "") -> str:
    """``path:line:column: not valid YAML: <problem>`` in one line (PyYAML's own text spans several)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML refuses (NUL, other controls)
        ch = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
        line = text[: e.position].count("\n") + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        return f"{path}:{line}:{column}: not valid YAML: the character U+{ch:04X} is not allowed in YAML"
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    text = f"{problem} ({context})" if context else str(problem)
    return f"{where}: not valid YAML: {' '.join(text.split())}"


def _model_at(model: Any, loc: tuple[Any, ...], data: Any) -> Any:
    """The model class at the parent of ``loc`` (walking the annotations and the data together), or ``None``."""
    import typing

    current: Any = model
    node: Any = with_defaults(data) if model is Recipe else data
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            current = _element(current)
        else:
            node = node.get(part) if isinstance(node, dict) else None
            fields = getattr(current, "model_fields", None)
            if not fields or part not in fields:
                return None
            current = fields[part].annotation
            marker = next((m for m in fields[part].metadata if isinstance(m, RegistryField)), None)
            if marker is not None:  # pydantic keeps a field's own Annotated metadata apart
                current = typing.Annotated[current, marker]
        current = _pick_member(current, node)
    return current


def _element(ann: Any) -> Any:
    import typing

    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    args = typing.get_args(ann)
    return args[0] if typing.get_origin(ann) in (list, tuple) and args else None


def _pick_member(ann: Any, node: Any) -> Any:
    """Resolve ``Annotated``/``Optional``/registry fields to the member class the data selects."""
    import types
    import typing

    while typing.get_origin(ann) is typing.Annotated:
        marker = next((m for m in ann.__metadata__ if isinstance(m, RegistryField)), None)
        if marker is not None:
            return marker.member(node)
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(ann) if m is not type(None)]
        wanted = node.get("type") if isinstance(node, dict) else None
        for m in members:
            m = _pick_member(m, node)
            t = getattr(m, "model_fields", {}).get("type")
            if wanted is None or (t is not None and t.default == wanted):
                return m
        return _pick_member(members[0], node) if members else None
    return ann


def format_validation_error(error: ValidationError, data: dict[str, Any], source: str) -> str:
    """Turn a pydantic error into lines ``source: key.path: problem (hint)``."""
    lines = []
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.endswith("]")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(Recipe, loc, data)
            hint = ""
            if isinstance(parent, type) and issubclass(parent, BaseModel):
                allowed = [k for k in parent.model_fields if k != "base_dir"]
                close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            lines.append(f"{source}: {path}: unknown key{hint}")
        elif kind == "missing":
            lines.append(f"{source}: {path}: required key is missing")
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            what = "strategy" if ctx.get("key") == "strategy" else "type"
            lines.append(f"{source}: {path}: unknown {what} {ctx.get('tag', '')!r}{ctx.get('hint', '')}; "
                         f"expected one of {ctx.get('expected_tags', '')}")
        elif kind == "union_tag_not_found":
            ctx = err.get("ctx", {})
            lines.append(f"{source}: {path}: {ctx.get('key', 'type')} is missing; expected one of {ctx.get('expected_tags', '')}")
        elif kind == "value_error":  # our own checks: the message says it; a whole-recipe one names its keys
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {message}" if not loc else f"{source}: {path}: {message}")
        else:
            given = err.get("input")
            shown = f" (got {given!r})" if not isinstance(given, dict | list) else ""
            lines.append(f"{source}: {path}: {err['msg']}{shown}")
    return "\n".join(lines)

