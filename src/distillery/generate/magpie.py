"""``generation: {strategy: magpie}``: instructions written by the teacher itself from an empty
user turn (Xu et al., 2024, "Magpie: Alignment Data Synthesis from Scratch by Prompting
Aligned LLMs with Nothing", arXiv:2406.08464).

An aligned chat model has learned what user turns look like. Magpie sends it only its chat
template's *pre-query prefix* — the text before a user message's content, e.g. Llama-3's
``<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n`` — as a raw text completion,
so the model writes a user turn itself (step ``query``, sampled hot: ``query_temperature``,
default 1.0, as in the paper); the turn ends at the template's end-of-turn marker. The query
is then answered with an ordinary chat request (step ``response``), and the pair is a record
whose prompt is the generated query (what the student trains on).

Seeds only count slots: each seed row asks for ``queries_per_seed`` queries (``recipes/data/
magpie-slots.jsonl`` ships 1000 rows); a row's optional ``system`` field (or
``generation.system``) puts a system message before the user turn, which steers the topic
(the paper's task-specific variants). Slot ``i`` of row ``r`` is sample ``r * queries_per_seed
+ i`` of the prefix, so every slot has its own seed and cache entry.

The chat template: with the ``transformers`` backend it is the model's own tokenizer's; an
OpenAI-compatible server does not expose its template, so ``generation.tokenizer`` (a local
folder or Hub name holding the teacher's tokenizer) or ``generation.pre_query_template`` (the
literal prefix) must be given. The backend must serve raw completions (``transformers``, or
``/v1/completions`` of vLLM, SGLang, llama.cpp or ``transformers serve``).

Filters (the paper's, on the query, before it is answered; rejected records keep the raw text
and the reason): ``empty_query`` (nothing, or only template tokens), ``template_leak`` (the turn
contains role markers or special tokens: the model wrote past its turn), ``truncated_query``
(no end of turn within the budget), ``short_query`` (fewer than ``min_query_words`` words),
``duplicate_query`` (the same query as an earlier slot of the batch, after whitespace and case
normalisation; the recipe's dedup stages compare across batches), and with ``languages`` set
``wrong_language`` / ``low_confidence`` (lingua, as the ``language`` filter). On the response:
the usual failed / empty / truncated rejections, and ``refusal`` (``reject_refusals``: the
response opens with a refusal phrase, :func:`distillery.generate.checks.refusal`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from distillery import registry
from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.errors import BackendError, RecipeError
from distillery.generate.candidates import PromptItem, seed_id
from distillery.generate.checks import call_failure, refusal_phrase
from distillery.generate.strategy import GenerationContext, Strategy, StrategyConfig
from distillery.io.seeds import SeedRow
from distillery.registry import register

if TYPE_CHECKING:
    from distillery.recipe import Recipe

SENTINEL = "DistilleryMagpieQuerySentinel"
"""Stands in for the user's content when a chat template is rendered, to cut it there."""

GENERIC_MARKERS = re.compile(
    r"<\|[A-Za-z0-9_]{1,40}\|>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>"
)
"""Role markers of common chat formats (ChatML and Llama-3 ``<|...|>`` tokens, Gemma's turns,
Llama-2's ``[INST]``), looked for in every query whatever the template."""


# -- the chat template -------------------------------------------------------------------------
def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise RecipeError(f"generation.tokenizer: {name!r} has no chat template; set generation.pre_query_template "
                          "(the text before a user message) instead")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja2 TemplateError: e.g. a template that refuses system messages
        roles = "/".join(m["role"] for m in messages)
        raise RecipeError(f"generation: the chat template cannot render a {roles} conversation: "
                          f"{type(e).__name__}: {str(e)[:200]}") from None


def _split(tokenizer: Any, system: str | None) -> tuple[str, str]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": SENTINEL}]
    text = _render(tokenizer, messages, add_generation_prompt=False)
    cut = text.find(SENTINEL)
    if cut < 0:
        raise RecipeError("generation: the chat template does not keep the user's text as it is (cannot find where "
                          "the user turn starts); set generation.pre_query_template")
    return text[:cut], text[cut + len(SENTINEL):]


def pre_query_prefix(tokenizer: Any, system: str | None = None) -> str:
    """The text a chat template puts before a user message's content: what Magpie sends.

    Renders ``[{"role": "user", "content": SENTINEL}]`` (after an optional system message)
    with ``apply_chat_template(tokenize=False, add_generation_prompt=False)`` and cuts at the
    sentinel, e.g. ``"<|user|>\\n"`` for distillery's built-in models, Llama-3's
    ``"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n"``. The template's BOS,
    if it writes one, is kept.

    Args:
        tokenizer: a ``transformers`` tokenizer with a chat template.
        system: a system message placed before the user turn, or ``None``.

    Raises:
        RecipeError: no chat template, a template that refuses the conversation (e.g. a system
            message), or one that rewrites the user's text.
    """
    return _split(tokenizer, system)[0]


def post_query_suffix(tokenizer: Any) -> str:
    """The text a chat template puts right after a user message's content (its end-of-turn
    marker, e.g. ``"<|end|>\\n"``, ``"<|eot_id|>"``, ``"<|im_end|>\\n"``).

    Raises:
        RecipeError: as :func:`pre_query_prefix`.
    """
    return _split(tokenizer, None)[1]


def end_of_turn(tokenizer: Any) -> list[str]:
    """Stop strings that end a generated user turn: the template's end-of-turn marker and the
    tokenizer's EOS token (empty ones dropped, in that order, without repeats)."""
    out: list[str] = []
    for s in (post_query_suffix(tokenizer).strip(), getattr(tokenizer, "eos_token", None)):
        if isinstance(s, str) and s and s not in out:
            out.append(s)
    return out


def template_markers(tokenizer: Any) -> list[str]:
    """Strings that must not appear in a generated query: the tokenizer's special and added
    tokens, and the template's user header and assistant generation prompt (stripped), e.g.
    ``["<|assistant|>", "<|bos|>", "<|end|>", ..., "<|user|>"]``, longest first."""
    found: set[str] = set(getattr(tokenizer, "all_special_tokens", []) or [])
    try:
        found |= set(tokenizer.get_added_vocab())
    except (AttributeError, NotImplementedError):
        pass
    prefix = pre_query_prefix(tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    headers = [prefix.removeprefix(bos) if bos else prefix]
    plain = _render(tokenizer, [{"role": "user", "content": SENTINEL}], add_generation_prompt=False)
    prompted = _render(tokenizer, [{"role": "user", "content": SENTINEL}], add_generation_prompt=True)
    if prompted.startswith(plain):
        headers.append(prompted[len(plain):])
    for header in headers:
        header = header.strip()
        if header and not re.fullmatch(r"[\w\s]+", header):  # a bare word ("user") is no marker
            found.add(header)
    return sorted((m for m in found if m.strip()), key=lambda m: (-len(m), m))


def _bos_added(tokenizer: Any) -> bool:
    """Whether encoding text with this tokenizer adds its BOS token (as a server does)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    try:
        ids = tokenizer("a")["input_ids"]
    except Exception:
        return False
    return bool(ids) and ids[0] == bos_id


def load_tokenizer(name: str, base_dir: str | Path | None = None) -> Any:
    """The tokenizer at ``name``: a local folder (relative to ``base_dir``), ``builtin:<model>``
    or a Hub name (``AutoTokenizer.from_pretrained``).

    Raises:
        RecipeError: it cannot be loaded (no such folder; a Hub name without network).
    """
    from transformers import AutoTokenizer

    from distillery.builtin.models import resolve_model

    try:
        path = resolve_model(name, base_dir)
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, FileNotFoundError) as e:
        raise RecipeError(f"generation.tokenizer: cannot load a tokenizer from {name!r}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


# -- the filters ---------------------------------------------------------------------------------
def _clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def extract_query(text: str | None, stops: list[str] | tuple[str, ...] = (), markers: list[str] | tuple[str, ...] = (),
                  min_words: int = 1) -> tuple[str | None, str | None]:
    """The user turn in a raw completion of the pre-query prefix, or why there is none.

    The text is cut at the first stop string (the end-of-turn marker, when the server did not
    stop there itself) and stripped. ``markers`` (see :func:`template_markers`) and the
    :data:`GENERIC_MARKERS` must not remain in it.

    Returns:
        ``(query, None)``, or ``(None, reason)`` with reason ``empty_query: ...`` (no text, or
        only template tokens), ``template_leak: ...`` (a role marker or special token inside
        the turn) or ``short_query: ...`` (fewer than ``min_words`` words).
    """
    text = text or ""
    for stop in stops:
        if stop:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
    query = text.strip()
    if not query:
        return None, "empty_query: the teacher wrote no user turn"
    leaked = [m for m in markers if m in query] + GENERIC_MARKERS.findall(query)
    bare = query
    for m in leaked:
        bare = bare.replace(m, " ")
    bare = GENERIC_MARKERS.sub(" ", bare).strip()
    if leaked and not bare:
        return None, f"empty_query: only template tokens ({_clip(query)!r})"
    if leaked:
        return None, f"template_leak: the turn contains {leaked[0]!r} ({_clip(query)!r})"
    words = len(query.split())
    if words < min_words:
        return None, f"short_query: {words} word(s) < {min_words} ({_clip(query)!r})"
    return query, None


def normalise(query: str) -> str:
    """The form two queries are compared in: whitespace collapsed, case folded."""
    return " ".join(query.split()).casefold()


# -- the strategy --------------------------------------------------------------------------------
@register("strategy")
class MagpieConfig(StrategyConfig):
    """Magpie: the teacher writes each user turn from its chat template's pre-query prefix
    alone, then answers it (Xu et al., 2024, arXiv:2406.08464).

    Attributes:
        queries_per_seed: queries asked per seed row (each row is only a slot; its content is
            ignored but for an optional ``system`` field).
        tokenizer: where the teacher's chat template comes from: a local folder, a
            ``builtin:`` model or a Hub name. Default with the ``transformers`` backend: the
            teacher model's own; other backends need it or ``pre_query_template``. Use the
            tokenizer of the model the server serves, or the prefix will not be its template's.
        pre_query_template: the literal pre-query prefix to send (e.g. Llama-3's
            ``"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n"``), instead of
            rendering it from ``tokenizer``; sent as it is (servers that add a BOS themselves
            want it without one). Cannot place a system message.
        system: a system message before every user turn (a seed's ``system`` field overrides
            it); it also goes with the response request and into the record's prompt.
        query_temperature, query_top_p: sampling of the query step (the paper: 1.0 and 1.0);
            the response step uses ``teacher.sampling``.
        query_max_tokens: token budget of a query (default ``teacher.sampling.max_tokens``).
        stop: stop strings of the query step (default: the template's end-of-turn marker and
            the EOS token; none with only ``pre_query_template``, the server stops at EOS).
        min_query_words: queries with fewer words are rejected (``short_query``).
        languages: keep only queries in these languages (ISO 639-1, e.g. ``[en]``; lingua),
            checked before they are answered; ``None``: no check.
        reject_refusals: reject responses that open with a refusal (``refusal``).
    """

    strategy: Literal["magpie"] = "magpie"
    queries_per_seed: int = Field(1, ge=1)
    tokenizer: str | None = None
    pre_query_template: str | None = None
    system: str | None = None
    query_temperature: float = Field(1.0, ge=0)
    query_top_p: float = Field(1.0, gt=0, le=1)
    query_max_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = None
    min_query_words: int = Field(3, ge=1)
    languages: list[str] | None = None
    reject_refusals: bool = True

    @field_validator("pre_query_template")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("pre_query_template is blank; give the text before a user message, or leave it unset")
        return value

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from pydantic import ValidationError

        from distillery.filter.language import LanguageConfig

        try:
            return LanguageConfig(languages=value).languages
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None

    def build(self, recipe: Recipe) -> Magpie:
        """The strategy, after checking (cheaply: nothing is opened) that the teacher's backend
        serves raw completions and that a chat template can be found.

        Raises:
            RecipeError: a backend without raw completions; an ``openai`` (or plugin) backend
                with neither ``tokenizer`` nor ``pre_query_template``; ``system`` with only
                ``pre_query_template``.
        """
        teacher = recipe.teacher
        if teacher is not None:
            check_raw_completions(registry.get("backend", teacher.backend), teacher.backend)
            if teacher.backend != "transformers" and not self.tokenizer and not self.pre_query_template:
                raise RecipeError(
                    f"generation.strategy magpie with backend {teacher.backend!r} needs the teacher's chat template, "
                    "which the server does not expose: set generation.tokenizer (a local folder or Hub name of the "
                    "teacher's tokenizer) or generation.pre_query_template (the literal text before a user message, "
                    "e.g. \"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n\" for Llama-3)"
                )
        if self.system and self.pre_query_template and not self.tokenizer:
            raise RecipeError("generation.system: a system message cannot be placed with only "
                              "generation.pre_query_template; set generation.tokenizer as well")
        return Magpie(self, recipe)


def check_raw_completions(backend: Backend | type[Backend], name: str) -> None:
    """Raise unless ``backend`` (an instance or a class) serves raw text completions.

    Raises:
        RecipeError: naming the backend and what to use instead.
    """
    if not getattr(backend, "raw_completions", False):
        raise RecipeError(
            f"generation.strategy magpie needs raw text completions; backend {name!r} does not serve them "
            "(use transformers or an OpenAI-compatible server with /v1/completions)"
        )


@dataclass
class _Template:
    """What the query step needs from the chat template."""

    tokenizer: Any
    stops: list[str]
    markers: list[str]
    strip_bos: bool


@dataclass
class _Slot:
    row: SeedRow
    seed_id: str
    index: int
    system: str | None


class Magpie(Strategy):
    """Magpie generation (see the module doc): per slot, a raw completion of the pre-query
    prefix (step ``query``), the paper's query filters, then a chat answer (step ``response``).

    Record outputs: ``magpie_prefix`` (the exact text sent in the query step) and
    ``query_tokens`` (tokens the teacher spent writing the query). The query step is in
    ``steps``; records come out in (seed, sample) order.
    """

    config: MagpieConfig
    outputs = {"magpie_prefix": pa.string(), "query_tokens": pa.int64()}

    def __init__(self, config: MagpieConfig, recipe: Recipe) -> None:
        super().__init__(config, recipe)
        self._template: _Template | None = None
        self._language: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_template"] = None  # loaded again on first use where the strategy lands
        state["_language"] = None
        return state

    @property
    def inputs(self) -> set[str]:
        """Nothing is required of the seeds (an optional ``system`` field is read)."""
        return set()

    def describe(self) -> str:
        c = self.config
        where = ("the literal pre-query prefix" if c.pre_query_template and not c.tokenizer
                 else "its chat template's pre-query prefix")
        return (f"**Generation**: Magpie (Xu et al., 2024): the teacher wrote each user turn from {where} alone "
                f"(temperature {c.query_temperature:g}, {c.queries_per_seed} per seed row), then answered it; empty, "
                f"template-leaking, truncated, short (< {c.min_query_words} words) and duplicate queries were rejected"
                + (f", and those not in {', '.join(c.languages)}" if c.languages else "")
                + (", as were refusals." if c.reject_refusals else "."))

    # -- template ------------------------------------------------------------------------------
    def _load(self) -> _Template:
        if self._template is not None:
            return self._template
        c, teacher = self.config, self.recipe.teacher
        name = c.tokenizer or (teacher.model if teacher is not None and teacher.backend == "transformers" else None)
        tokenizer = load_tokenizer(name, self.recipe.base_dir) if name else None
        if tokenizer is not None:
            stops = list(c.stop) if c.stop is not None else end_of_turn(tokenizer)
            markers = template_markers(tokenizer)
            if c.pre_query_template:
                markers = sorted(set(markers) | {c.pre_query_template.strip()}, key=lambda m: (-len(m), m))
            strip_bos = teacher is not None and teacher.backend != "transformers" and _bos_added(tokenizer)
        else:
            stops = list(c.stop or [])
            markers = [c.pre_query_template.strip()] if c.pre_query_template else []
            strip_bos = False
        self._template = _Template(tokenizer, stops, markers, strip_bos)
        return self._template

    def prefix(self, system: str | None) -> str:
        """The text sent in the query step for a slot with ``system`` (see :class:`MagpieConfig`).

        Raises:
            RecipeError: as :func:`pre_query_prefix`; a seed's ``system`` with only ``pre_query_template``.
        """
        template = self._load()
        literal = self.config.pre_query_template
        if literal and not system:
            return literal
        if template.tokenizer is None:
            raise RecipeError("a seed's system field cannot be placed with only generation.pre_query_template; "
                              "set generation.tokenizer as well")
        text = pre_query_prefix(template.tokenizer, system)
        bos = template.tokenizer.bos_token
        if template.strip_bos and bos and text.startswith(bos):
            text = text[len(bos):]  # the server's tokenizer adds it again
        return text

    # -- generation ----------------------------------------------------------------------------
    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        """Queries for every slot of ``seeds``, filtered, then answered (see the class doc).

        Raises:
            BackendError: the run's backend does not serve raw completions.
            RecipeError: the chat template cannot be loaded or rendered.
        """
        c = self.config
        if ctx.backend is not None and not getattr(ctx.backend, "raw_completions", False):
            try:
                check_raw_completions(ctx.backend, ctx.backend.kind)
            except RecipeError as e:
                raise BackendError(str(e)) from None
        template = await asyncio.to_thread(self._load)
        slots: list[_Slot] = []
        for row in seeds:
            sid = seed_id(row, ctx.id_field, ctx.source_name)
            system = row.data.get("system")
            system = system if isinstance(system, str) and system.strip() else c.system
            slots.extend(_Slot(row, sid, row.index * c.queries_per_seed + k, system) for k in range(c.queries_per_seed))
        ctx.prompted += len(slots)
        prefixes = {s: self.prefix(s) for s in {slot.system for slot in slots}}
        sampling = dataclasses.replace(
            ctx.sampling, temperature=c.query_temperature, top_p=c.query_top_p,
            max_tokens=c.query_max_tokens or ctx.sampling.max_tokens, stop=tuple(template.stops) or None,
        )
        requests = [GenerationRequest.raw(prefixes[s.system], sampling, s.index, step="query") for s in slots]
        results = await ctx.generate(requests)

        records: list[dict[str, Any]] = []
        seen: dict[str, str] = {}
        todo: list[tuple[_Slot, str, dict[str, Any], GenerationResult]] = []
        for slot, request, result in zip(slots, requests, results, strict=True):
            if not ctx.keep(result):
                continue
            step = ctx.step("query", request, result)
            query, reason = self._query(result, template, sampling.max_tokens)
            if query is not None:
                key = normalise(query)
                if key in seen:
                    query, reason = None, f"duplicate_query: same as {seen[key]} ({_clip(key)!r})"
                else:
                    seen[key] = f"{slot.seed_id}#{slot.index}"
            if query is None:
                records.append(self._rejected(ctx, slot, result, step, prefixes[slot.system], reason))  # type: ignore[arg-type]
                continue
            todo.append((slot, query, step, result))
        if c.languages and todo:
            verdicts = await asyncio.to_thread(self._languages, [q for _, q, _, _ in todo])
            kept = []
            for (slot, query, step, result), reason in zip(todo, verdicts, strict=True):
                if reason is None:
                    kept.append((slot, query, step, result))
                else:
                    records.append(self._rejected(ctx, slot, result, step, prefixes[slot.system], reason, query))
            todo = kept

        items = [PromptItem(slot.row, slot.seed_id, self._messages(slot.system, query)) for slot, query, _, _ in todo]
        answers = [GenerationRequest.make(item.messages, ctx.sampling, slot.index, step="response")
                   for item, (slot, _, _, _) in zip(items, todo, strict=True)]
        async for i, result in ctx.stream(answers):
            if not ctx.keep(result):
                continue
            slot, _, step, query_result = todo[i]
            record = ctx.candidate(items[i], result, slot.index, [step], magpie_prefix=prefixes[slot.system],
                                   query_tokens=query_result.tokens_out)
            phrase = refusal_phrase(result.text, at_start=True) if c.reject_refusals else None
            if phrase:
                ctx.reject(record, f"refusal: the response opens with {phrase!r}", name="magpie")
            records.append(record)
        records.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return records

    @staticmethod
    def _messages(system: str | None, query: str) -> list[dict[str, str]]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": query}]

    def _query(self, result: GenerationResult, template: _Template, max_tokens: int) -> tuple[str | None, str | None]:
        if result.error_kind is not None or result.finish_reason == "content_filter":
            return None, call_failure(result, "query", max_tokens)
        query, reason = extract_query(result.text, template.stops, template.markers, self.config.min_query_words)
        if query is not None and result.finish_reason == "length":
            return None, f"truncated_query: the user turn did not end within {max_tokens} tokens ({_clip(query)!r})"
        return query, reason

    def _languages(self, queries: list[str]) -> list[str | None]:
        if self._language is None:
            from distillery.filter.language import LanguageConfig, LanguageFilter

            self._language = LanguageFilter(LanguageConfig(languages=self.config.languages, fields=["prompt"]))
        checks = self._language.check_batch([{"prompt": [{"role": "user", "content": q}]} for q in queries])
        return [None if check.passed else check.reason for check in checks]

    def _rejected(self, ctx: GenerationContext, slot: _Slot, result: GenerationResult, step: dict[str, Any],
                  prefix: str, reason: str, query: str | None = None) -> dict[str, Any]:
        """A rejected record for a slot whose query did not pass: its prompt is the query as far
        as it goes (the raw text is in ``steps`` and the verdict), its response is empty."""
        text = query if query is not None else (result.text or "").strip()
        item = PromptItem(slot.row, slot.seed_id, self._messages(slot.system, text))
        return ctx.record(item, None, slot.index, [step], reject=reason, raw=result.text,
                          magpie_prefix=prefix, query_tokens=result.tokens_out)
