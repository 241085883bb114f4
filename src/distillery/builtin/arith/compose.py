"""Compose one word problem: frame, ``d`` steps, question; text, gold program and answer.

The method follows TinyGSM (Liu et al., 2023, "TinyGSM: achieving >80% on GSM8k with small
language models"): grade-school problems whose solutions are short Python programs,
checked by execution. Here the problems are procedural (templates x lexicon x random
numbers) rather than model-written, so every gold answer is exact by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from distillery import registry
from distillery.builtin.arith.state import State, Template

#: Every template, in registration order: frames, questions, steps (the modules of the
#: registry's ``arith_template`` kind, imported in order by this lookup).
TEMPLATES: tuple[Template, ...] = tuple(registry.items("arith_template").values())
TEMPLATE_COUNT = len(TEMPLATES)

_FRAMES = [t for t in TEMPLATES if t.role == "frame"]
_STEPS = {k: [t for t in TEMPLATES if t.role == "step" and k in t.kinds] for k in {k for t in TEMPLATES for k in t.kinds}}
_QUESTIONS = {k: [t for t in TEMPLATES if t.role == "question" and k in t.kinds] for k in _STEPS}

_MAX_RESTARTS = 200


@dataclass(frozen=True)
class Story:
    """A composed problem: ``question`` text, gold ``program``, exact ``value``, ``template`` ids."""

    question: str
    program: str
    value: int | Fraction
    template: str
    difficulty: int


def _pick(rng: random.Random, options: list[Template], weights: list[float]) -> int:
    return rng.choices(range(len(options)), weights)[0]


def _try_steps(st: State) -> bool:
    for i in range(st.difficulty):
        st.step_index = i
        last = i == st.difficulty - 1
        options = [
            t for t in _STEPS.get(st.kind, []) if (last or not t.terminal) and not (t.once and t.id in st.template_ids)
        ]
        # Repeating a template in one story is allowed but made rarer, for variety.
        weights = [t.weight * (0.25 if t.id in st.template_ids else 1.0) for t in options]
        while options:
            j = _pick(st.rng, options, weights)
            tpl = options.pop(j)
            weights.pop(j)
            if tpl.fn(st):
                st.template_ids.append(tpl.id)
                break
        else:
            return False
    return True


def compose(rng: random.Random, difficulty: int) -> Story:
    """Compose one problem of ``difficulty`` (1..5 arithmetic operations) from ``rng``.

    Restarts from a new frame when a story reaches a state no step fits (rare).

    Raises:
        RuntimeError: no story could be composed (a template bug).
    """
    for _ in range(_MAX_RESTARTS):
        st = State(rng, difficulty)
        frame = _FRAMES[_pick(rng, _FRAMES, [t.weight for t in _FRAMES])]
        frame.fn(st)
        st.template_ids.append(frame.id)
        if not _try_steps(st):
            continue
        questions = list(_QUESTIONS.get(st.kind, []))
        while questions:
            q = questions.pop(rng.randrange(len(questions)))
            if q.fn(st):
                st.template_ids.append(q.id)
                break
        else:
            continue
        value = st.value
        if isinstance(value, Fraction) and value.denominator == 1:
            value = int(value)
        body = [*st.lines, f"result = {st.var}", "return result"]
        program = "def solution():\n" + "".join(f"    {line}\n" for line in body)
        if st.uses_fraction:
            program = "from fractions import Fraction\n\n" + program
        return Story(" ".join(st.sentences), program, value, "+".join(st.template_ids), difficulty)
    raise RuntimeError(f"could not compose a difficulty-{difficulty} problem")
