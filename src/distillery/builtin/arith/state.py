"""The story under construction and the template registry of the ``arith`` task.

A story is built sentence by sentence. Its :class:`State` carries the one running quantity
(its kind, exact value and program variable), the characters and objects named so far, the
question sentences and the gold program lines. Each template is a function that either
extends the state by one sentence (and, for steps, one arithmetic operation) or returns
``False`` when it does not fit the state; it is registered with :func:`template`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from distillery import registry
from distillery.builtin.arith.lexicon import Container, Entity, Rate

#: State kinds: what the running quantity counts.
KINDS = ("items", "groups", "share", "money", "rate", "total", "temp", "score")

#: Largest magnitude a running quantity may reach; keeps numbers grade-school sized.
MAX_VALUE = 2000


@dataclass(frozen=True)
class Agent:
    """Who acts in a story: a named person, or a business or machine (``person=False``).

    ``name`` is the full mention used by frames and questions ("Mia", "Leo's bakery");
    ``short`` the mention inside steps ("the bakery"), defaulting to ``name``.
    """

    name: str
    subj: str
    obj: str
    pos: str
    person: bool
    short: str = ""

    @property
    def mention(self) -> str:
        """The name used inside step sentences."""
        return self.short or self.name

    @property
    def possessive(self) -> str:
        """The step mention's possessive form ("Mia's", "the bakery's")."""
        return self.mention + "'s"


@dataclass
class State:
    """A story being built: running quantity, named things, sentences and program lines.

    ``value`` is exact (int, or Fraction after a share step); ``var`` is its program
    variable. ``lines`` are the body lines of ``solution()`` without indentation.
    """

    rng: random.Random
    difficulty: int
    kind: str = ""
    value: int | Fraction = 0
    var: str = ""
    agent: Agent | None = None
    entity: Entity | None = None
    container: Container | None = None
    packed: bool = False
    rate: Rate | None = None
    unit: tuple[str, str] = ("day", "days")
    people: tuple[str, str] = ("friends", "friend")
    city: str = ""
    game: str = ""
    times: list[str] = field(default_factory=list)
    last_rate: int = 0
    had_loss: bool = False
    uses_fraction: bool = False
    step_index: int = 0
    sentences: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    template_ids: list[str] = field(default_factory=list)
    names_used: set[str] = field(default_factory=set)

    # -- text ------------------------------------------------------------------------
    def say(self, pattern: str, **slots: object) -> None:
        """Fill ``pattern`` and append it as a sentence (first letter capitalised).

        Common slots filled here: ``S`` subject mention, ``O`` object mention, ``P``
        possessive mention, ``Name``, ``items``/``item`` (entity), ``containers``/``container``.
        """
        agent = self.agent
        common: dict[str, object] = {}
        if agent is not None:
            use_name = self.rng.random() < 0.6
            common["S"] = agent.mention if use_name else agent.subj
            common["O"] = agent.mention if use_name else agent.obj
            common["P"] = agent.possessive if use_name else agent.pos
            common["Name"] = agent.name
        if self.entity is not None:
            common["items"], common["item"] = self.entity.plural, self.entity.singular
        if self.container is not None:
            common["containers"], common["container"] = self.container.plural, self.container.singular
        common.update(slots)
        text = pattern.format(**common)
        self.sentences.append(text[0].upper() + text[1:])

    def friend(self) -> str:
        """A person's name not used yet in this story."""
        from distillery.builtin.arith.lexicon import FEMALE_NAMES, MALE_NAMES

        while True:
            name = self.rng.choice(FEMALE_NAMES if self.rng.random() < 0.5 else MALE_NAMES)
            if name not in self.names_used:
                self.names_used.add(name)
                return name

    # -- program -----------------------------------------------------------------------
    def start(self, kind: str, var: str, value: int) -> None:
        """Set the running quantity: ``var = value``."""
        self.kind, self.var, self.value = kind, var, value
        self.lines.append(f"{var} = {value}")

    def apply(self, op: str, operand: str, amount: int, kind: str | None = None, var: str | None = None) -> None:
        """One operation with a named operand: ``operand = amount``; ``new = var op operand``.

        ``op`` is ``+``, ``-``, ``*``, ``//`` (exact by construction) or ``frac`` (exact
        division written ``Fraction(var, operand)``). ``kind``/``var`` change what the
        running quantity counts (e.g. apples -> bags).
        """
        new_var = var or self.var
        self.lines.append(f"{operand} = {amount}")
        if op == "frac":
            self.uses_fraction = True
            self.lines.append(f"{new_var} = Fraction({self.var}, {operand})")
        else:
            self.lines.append(f"{new_var} = {self.var} {op} {operand}")
        self.value = _compute(self.value, op, amount)
        self.var = new_var
        if kind is not None and kind != self.kind:
            self.kind = kind
            self.had_loss = False  # "left" questions refer to losses of the new quantity only
        elif op in ("-", "//"):
            self.had_loss = True

    def apply_literal(self, op: str, literal: int) -> None:
        """One operation with a literal the text states in words ("doubles", "half"): ``var = var op 2``."""
        self.lines.append(f"{self.var} = {self.var} {op} {literal}")
        self.value = _compute(self.value, op, literal)
        if op == "//":
            self.had_loss = True


def _compute(value: int | Fraction, op: str, amount: int) -> int | Fraction:
    if op == "+":
        return value + amount
    if op == "-":
        return value - amount
    if op == "*":
        return value * amount
    if op == "//":
        if value % amount:
            raise ValueError(f"inexact floor division {value} // {amount}")
        return value // amount
    if op == "frac":
        return Fraction(value, amount)
    raise ValueError(f"unknown op {op!r}")


# -- templates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """One sentence pattern of the task.

    Attributes:
        id: unique id, used in :attr:`ArithProblem.template` ("have+buy_more+q_items_now").
        role: ``frame`` (opening sentence setting the quantity), ``step`` (one arithmetic
            operation) or ``question``.
        kinds: for a frame, the kind it starts; for a step or question, the kinds it applies to.
        text: the sentence pattern (documentation; the function fills it).
        terminal: a step that must be the last one (its result cannot be acted on further).
        once: a step used at most once per story (its sentence would contradict a repeat).
    """

    id: str
    role: str
    kinds: tuple[str, ...]
    text: str
    fn: Callable[[State], bool]
    weight: float = 1.0
    terminal: bool = False
    once: bool = False


def template(
    id: str, role: str, kinds: str, text: str, *, weight: float = 1.0, terminal: bool = False, once: bool = False
) -> Callable[[Callable[[State], bool]], Callable[[State], bool]]:
    """Register the decorated function as template ``id`` (kind ``arith_template`` of
    :mod:`distillery.registry`); ``kinds`` is space-separated.

    Raises:
        ValueError: ``id`` names another template already.
    """

    def wrap(fn: Callable[[State], bool]) -> Callable[[State], bool]:
        registry.add("arith_template", id, Template(id, role, tuple(kinds.split()), text, fn, weight, terminal, once))
        return fn

    return wrap
