"""``generation: {strategy: attributes}``: attribute seeding (TinyStories, Cosmopedia).

After Eldan & Li, 2023, "TinyStories: How Small Can Language Models Be and Still Speak
Coherent English?" (random words and story features drawn into every prompt) and Ben Allal et
al., 2024, "Cosmopedia" (topics, audiences and styles combined into the prompt): diversity
comes from random draws from named vocabularies filled into one template. For each seed and
each of ``draws`` draws, one value (or ``picks[name]`` distinct values) is drawn from every
vocabulary, seeded per (``seed``, seed id, draw, vocabulary) so a re-run — or adding a
vocabulary — leaves the other draws as they were; one call writes the content.

The template (``create``, overridable) sees each vocabulary's draw under the vocabulary's name
(several picks joined as "a, b and c"), ``attributes`` (the draw as a dict, a list for several
picks), ``seed`` (the seed row) and the seed's own fields. The shipped vocabularies
(``data/attributes/*.txt``, written for distillery) are ``topic``, ``feature`` (TinyStories-style
story features: dialogue, plot twist, moral, bad ending, foreshadowing...), ``audience`` and
``difficulty``; the shipped template asks for a short story.

**The record's prompt is the generation prompt itself** (the ``create`` messages, attributes
filled in): for TinyStories-style data the instruction with its attributes is a fine training
prompt, and it is what the response answers. Each record carries ``attributes`` (JSON of the
draw). A chat preamble before the content ("Here's a story:") is removed (a passed
``preamble`` verdict keeps it); a refusal is rejected with the raw text. The recipe's
``prompt:`` section is not used.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from distillery.backends.base import GenerationRequest
from distillery.errors import RecipeError
from distillery.generate.candidates import PromptItem, seed_id
from distillery.generate.checks import refusal, strip_preamble
from distillery.generate.persona import set_response
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, required_variables
from distillery.io.seeds import BadRow, SeedRow
from distillery.registry import register

BUILTIN_PREFIX = "builtin:"
DEFAULT_VOCABULARIES: dict[str, str] = {
    "topic": "builtin:topics",
    "feature": "builtin:features",
    "audience": "builtin:audiences",
    "difficulty": "builtin:difficulty",
}
"""The default ``vocabularies``: the shipped lists (``distillery/generate/data/attributes/<name>.txt``)."""

RESERVED = frozenset({"attributes", "seed"})


def shipped_vocabularies() -> list[str]:
    """Names of the shipped vocabulary files (``builtin:<name>``)."""
    folder = resources.files("distillery.generate") / "data" / "attributes"
    return sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))


def vocabulary_path(value: str, base_dir: str | Path | None) -> Path:
    """The file a vocabulary names: ``builtin:<name>`` (a shipped list) or a path (relative to
    ``base_dir``, the recipe's folder).

    Raises:
        RecipeError: an unknown ``builtin:`` name.
    """
    if value.startswith(BUILTIN_PREFIX):
        name = value[len(BUILTIN_PREFIX):]
        known = shipped_vocabularies()
        if name not in known:
            raise RecipeError(f"generation.vocabularies: no shipped vocabulary {value!r}; shipped: "
                              + ", ".join(BUILTIN_PREFIX + k for k in known))
        return Path(str(resources.files("distillery.generate") / "data" / "attributes" / f"{name}.txt"))
    p = Path(value).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def load_vocabulary(name: str, value: list[str] | str, base_dir: str | Path | None = None) -> list[str]:
    """The values of vocabulary ``name``: an inline list, or a file (one value a line; blank
    lines and ``#`` comments skipped) named by path or ``builtin:<name>``.

    Raises:
        RecipeError: the file is missing, or the vocabulary is empty or has an empty value
            (names the vocabulary, and the file).
    """
    if isinstance(value, list):
        values = [str(v).strip() for v in value]
        for i, v in enumerate(values):
            if not v:
                raise RecipeError(f"generation.vocabularies.{name}[{i}]: empty value")
        if not values:
            raise RecipeError(f"generation.vocabularies.{name}: the vocabulary is empty")
        return values
    path = vocabulary_path(value, base_dir)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RecipeError(f"generation.vocabularies.{name}: file not found: {path} "
                          "(give a list of values, a file, or builtin:<name>)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"generation.vocabularies.{name}: cannot read {path}: {e}") from None
    values = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not values:
        raise RecipeError(f"{path}: vocabulary {name!r} is empty (one value a line)")
    return values


def draw_attributes(vocabularies: dict[str, list[str]], picks: dict[str, int], seed: int, seed_key: str,
                    draw: int) -> dict[str, str | list[str]]:
    """One draw: for every vocabulary, one value (or ``picks[name]`` values at distinct
    positions, as a list), each vocabulary from its own ``random.Random(f"{seed}-{seed_key}-{draw}-{name}")``."""
    out: dict[str, str | list[str]] = {}
    for name, values in vocabularies.items():
        rng = random.Random(f"{seed}-{seed_key}-{draw}-{name}")
        n = picks.get(name, 1)
        out[name] = rng.choice(values) if n == 1 else rng.sample(values, n)
    return out


def join_phrase(value: str | list[str]) -> str:
    """A draw as template text: ``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if isinstance(value, str):
        return value
    if len(value) <= 2:
        return " and ".join(value)
    return ", ".join(value[:-1]) + " and " + value[-1]


@register("strategy")
class AttributesConfig(TemplatedConfig):
    """Attribute seeding (Eldan & Li, 2023, "TinyStories"; Ben Allal et al., 2024,
    "Cosmopedia"; see the module doc).

    Attributes:
        vocabularies: name -> a list of values, a file (one value a line, relative to the
            recipe's folder) or ``builtin:<topics|features|audiences|difficulty>``; names are
            template variables. Default: ``topic``, ``feature``, ``audience``, ``difficulty``
            from the shipped lists.
        picks: values drawn at once from a vocabulary (default 1), e.g. ``{feature: 2}``.
        draws: draws per seed (one record each; sample indexes ``0..draws-1``).
        seed: seed of the draws.
        templates: override of ``create``.
    """

    strategy: Literal["attributes"] = "attributes"
    vocabularies: dict[str, list[str] | str] = Field(default_factory=lambda: dict(DEFAULT_VOCABULARIES))
    picks: dict[str, int] = Field(default_factory=dict)
    draws: int = Field(1, ge=1)
    seed: int = 0

    @field_validator("vocabularies")
    @classmethod
    def _names(cls, value: dict[str, list[str] | str]) -> dict[str, list[str] | str]:
        if not value:
            raise ValueError("give at least one vocabulary")
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"vocabulary name {name!r} is not a template variable name (letters, digits, _)")
            if name in RESERVED:
                raise ValueError(f"vocabulary name {name!r} is reserved (the template sees {sorted(RESERVED)})")
        return value

    def build(self, recipe: Any) -> Attributes:
        return Attributes(self, recipe)


class Attributes(Strategy):
    """Draws attributes per (seed, draw) and has the teacher write one text from the filled template.

    Raises:
        RecipeError: (on construction) a vocabulary is missing, empty or unused by the template,
            or a ``picks`` entry names no vocabulary or asks for more values than it has.
    """

    config: AttributesConfig
    outputs = {"attributes": pa.string()}

    def __init__(self, config: AttributesConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.create = self.templates["create"]
        self.prompt = self.create
        # small files, read here so that a bad vocabulary stops the recipe before any work
        self.vocabularies = {name: load_vocabulary(name, value, recipe.base_dir) for name, value in config.vocabularies.items()}
        for name, n in config.picks.items():
            if name not in self.vocabularies:
                raise RecipeError(f"generation.picks.{name}: no vocabulary {name!r} (vocabularies: {', '.join(self.vocabularies)})")
            if not 1 <= n <= len(self.vocabularies[name]):
                raise RecipeError(f"generation.picks.{name}: {n} values asked of a vocabulary of {len(self.vocabularies[name])}")
        used = self.create.variables
        if "attributes" not in used:
            unused = [n for n in self.vocabularies if n not in used]
            if unused:
                raise RecipeError(f"generation.vocabularies: the create template uses neither {', '.join(map(repr, unused))} "
                                  "nor `attributes`; use them in the template or drop them")

    @property
    def inputs(self) -> set[str]:
        return required_variables(self.create, RESERVED | set(self.vocabularies))

    def describe(self) -> str:
        c = self.config
        sizes = ", ".join(f"`{n}` ({len(v)})" for n, v in self.vocabularies.items())
        return (f"**Generation**: attribute seeding (TinyStories, Eldan & Li, 2023; Cosmopedia, Ben Allal et al., 2024): "
                f"{c.draws} draw(s) per seed from the vocabularies {sizes} (seed {c.seed}) filled into the prompt; one "
                "call wrote each text. The record's prompt is that filled prompt; `attributes` holds the draw.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        plan: list[tuple[PromptItem, int, str]] = []  # item, draw, attributes JSON
        records: list[dict[str, Any]] = []
        for row in seeds:
            sid = seed_id(row, ctx.id_field, ctx.source_name)
            for k in range(c.draws):
                draw = draw_attributes(self.vocabularies, c.picks, c.seed, sid, k)
                variables = {**row.data, "seed": row.data, **{n: join_phrase(v) for n, v in draw.items()}, "attributes": draw}
                try:
                    messages = self.create.messages(variables)
                except KeyError as e:
                    records.append(ctx.bad_row(BadRow(row.index, row.line, f"missing_field: {e.args[0]}")))
                    break
                plan.append((PromptItem(row, sid, messages), k, json.dumps(draw, ensure_ascii=False, sort_keys=True)))
        ctx.prompted += len({item.seed_id for item, _, _ in plan})
        requests = [GenerationRequest.make(item.messages, ctx.sampling, k, step="create") for item, k, _ in plan]
        made: dict[int, dict[str, Any]] = {}
        async for i, result in ctx.stream(requests):
            if not ctx.keep(result):
                continue
            item, k, attributes = plan[i]
            record = ctx.candidate(item, result, k, attributes=attributes)
            if record["accepted"]:
                if refusal(result.text, at_start=True):
                    ctx.reject(record, "refusal: the teacher declined to write the text", raw=result.text)
                else:
                    text, removed = strip_preamble(result.text or "")
                    if removed:
                        set_response(record, text, removed)
            made[i] = record
        return records + [made[i] for i in sorted(made)]

