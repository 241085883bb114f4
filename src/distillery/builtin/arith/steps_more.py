"""Step templates of the ``arith`` task on money, rates, totals, temperatures and scores.

Same contract as :mod:`.steps`: one sentence and one arithmetic operation per step, or
``False`` when the step does not fit the story's state.
"""

from __future__ import annotations

from distillery.builtin.arith import lexicon as lx
from distillery.builtin.arith.state import MAX_VALUE, State, template
from distillery.builtin.arith.steps import add, divisors, is_person, sub, take


# -- money ----------------------------------------------------------------------------------
@template("earn", "step", "money", "{S} earns ${k} {chore}.", weight=2)
def _earn(st: State) -> bool:
    return is_person(st) and add(st, "earned", "{S} earns ${k} {chore}.", chore=st.rng.choice(lx.CHORES))


@template("money_gift", "step", "money", "{Friend} gives {O} ${k} {occasion}.")
def _money_gift(st: State) -> bool:
    if not is_person(st):
        return False
    return add(st, "gift", "{friend} gives {O} ${k} {occasion}.", friend=st.friend(),
                occasion=st.rng.choice(lx.GIFT_OCCASIONS))


@template("spend", "step", "money", "{S} spends ${k} on {thing}.", weight=2)
def _spend(st: State) -> bool:
    things = lx.PERSON_THINGS if is_person(st) else lx.ORG_THINGS
    return sub(st, "spent", "{S} spends ${k} on {thing}.", thing=st.rng.choice(things))


@template("pay_back", "step", "money", "{S} pays ${k} back to {Friend}.")
def _pay_back(st: State) -> bool:
    return is_person(st) and sub(st, "paid", "{S} pays ${k} back to {friend}.", friend=st.friend())


@template("spend_half", "step", "money", "{S} spends half of {P} money on {thing}.")
def _spend_half(st: State) -> bool:
    if not is_person(st) or st.value < 4 or st.value % 2:
        return False
    st.say("{S} spends half of {P} money on {thing}.", thing=st.rng.choice(lx.PERSON_THINGS))
    st.apply_literal("//", 2)
    return True


@template("buy_items", "step", "money", "{S} spends all of it on {items} at ${k} each.", weight=2)
def _buy_items(st: State) -> bool:
    prices = divisors(st.value, 2, 20)
    if not prices:
        return False
    k = st.rng.choice(prices)
    st.entity = st.rng.choice(lx.ENTITIES)
    st.container, st.packed = None, False
    st.say("{S} spends all of it on {items} at ${k} each.", k=k)
    st.apply("//", "price", k, kind="items", var=st.entity.var)
    return True


# -- rates and totals -----------------------------------------------------------------------
RATE_LATER = ("After a while", "After a month", "Soon", "After some practice", "The next month", "Later that year")


def _rate_slots(st: State) -> dict[str, object]:
    assert st.rate is not None
    return {"verb": st.rate.verb, "verb_s": st.rate.verb_s, "what": st.rate.items, "unit": st.unit[0]}


@template("rate_more", "step", "rate", "{Later}, {S} starts to {verb} {k} more {items} each {unit}.")
def _rate_more(st: State) -> bool:
    k = st.rng.randint(2, 15)
    later = st.rng.choice(RATE_LATER)
    st.say("{later}, {S} starts to {verb} {k} more {what} each {unit}.", k=k, later=later, **_rate_slots(st))
    st.apply("+", "extra", k)
    return True


@template("rate_fewer", "step", "rate", "Later, {S} {verb_s} {k} fewer {items} each {unit}.")
def _rate_fewer(st: State) -> bool:
    k = take(st, 2, 15)
    if k is None:
        return False
    st.say("Later, {S} {verb_s} {k} fewer {what} each {unit}.", k=k, **_rate_slots(st))
    st.apply("-", "fewer", k)
    return True


@template("rate_double", "step", "rate", "{Later}, {S} {verb_s} twice as many {items} each {unit}.")
def _rate_double(st: State) -> bool:
    later = st.rng.choice(RATE_LATER)
    st.say("{later}, {S} {verb_s} twice as many {what} each {unit}.", later=later, **_rate_slots(st))
    st.apply_literal("*", 2)
    return True


_DURATION = {"day": (2, 14), "hour": (2, 10), "week": (2, 8), "minute": (2, 30)}


def _over_time(st: State, pattern: str) -> bool:
    rate = st.rate
    assert rate is not None
    k = st.rng.randint(*_DURATION[st.unit[0]])
    if st.value * k > MAX_VALUE:
        return False
    st.say(pattern, k=k, units=st.unit[1], **_rate_slots(st))
    st.last_rate = int(st.value)
    if rate.money:
        kind, var = "money", "money"
    elif rate.yields and is_person(st):
        st.entity = lx.ENTITY_BY_PLURAL[rate.yields]
        kind, var = "items", st.entity.var
    else:
        kind, var = "total", rate.var
    st.apply("*", st.unit[1], k, kind=kind, var=var)
    return True


@template("over_time", "step", "rate", "{S} keeps this up for {k} {units}.", weight=3)
def _keep_up(st: State) -> bool:
    return _over_time(st, "{S} keeps this up for {k} {units}.")


@template("over_time_go", "step", "rate", "This goes on for {k} {units}.", weight=3)
def _goes_on(st: State) -> bool:
    return _over_time(st, "This goes on for {k} {units}.")


@template("total_extra", "step", "total", "On the weekend, {S} also {verb_s} {k} extra {items}.", once=True)
def _total_extra(st: State) -> bool:
    return add(st, "extra", "On the weekend, {S} also {verb_s} {k} extra {what}.", **_rate_slots(st))


@template("total_another", "step", "total", "After that, {S} {verb_s} another {k} {items}.")
def _total_another(st: State) -> bool:
    return add(st, "another", "After that, {S} {verb_s} another {k} {what}.", **_rate_slots(st))


@template("total_fewer", "step", "total", "{On} the last {unit}, {S} {verb_s} {k} fewer {items} than usual.",
          once=True)
def _total_fewer(st: State) -> bool:
    k = take(st, 2, st.last_rate - 1)
    if k is None:
        return False
    on = "On" if st.unit[0] in ("day", "week") else "In"
    st.say("{on} the last {unit}, {S} {verb_s} {k} fewer {what} than usual.", on=on, k=k, **_rate_slots(st))
    st.apply("-", "fewer", k)
    return True


# -- temperature ----------------------------------------------------------------------------
def _temp(st: State, op: str, operand: str, pattern: str, **slots: object) -> bool:
    k = st.rng.randint(2, 25)
    when = st.times[st.step_index]
    st.say(pattern, when=when, k=k, **slots)
    st.apply(op, operand, k)
    return True


@template("temp_rise", "step", "temp", "{When}, {S} sees it {rise} {k} degrees.")
def _temp_rise(st: State) -> bool:
    return _temp(st, "+", "rise", "{when}, {S} sees it {v} {k} degrees.", v=st.rng.choice(lx.RISE_VERBS_BASE))


@template("temp_fall", "step", "temp", "{When}, {S} notes a drop of {k} degrees.")
def _temp_fall(st: State) -> bool:
    return _temp(st, "-", "drop", "{when}, {S} notes a {v} of {k} degrees.", v=st.rng.choice(lx.FALL_NOUNS))


@template("temp_warmer", "step", "temp", "{When}, the {warmer} warms it by {k} degrees.")
def _temp_warmer(st: State) -> bool:
    return _temp(st, "+", "warming", "{when}, the {w} warms it by {k} degrees.", w=st.rng.choice(lx.WARMERS))


@template("temp_colder", "step", "temp", "{When}, a {cooler} cools it by {k} degrees.")
def _temp_colder(st: State) -> bool:
    return _temp(st, "-", "cooling", "{when}, a {c} cools it by {k} degrees.", c=st.rng.choice(lx.COOLERS))


# -- scores ---------------------------------------------------------------------------------
ROUNDS = ("the next round", "the second round", "the bonus round", "the final round", "one turn", "a lucky round")
MISTAKES = (
    "a wrong answer", "a foul", "a late answer", "a missed turn", "breaking a rule", "a bad move", "a wrong guess",
)
LUCKY = ("lucky card", "golden star", "bonus spin", "magic tile", "power-up", "double token")


@template("score_win", "step", "score", "{S} wins {k} points in {round}.")
def _score_win(st: State) -> bool:
    return add(st, "won", "{S} wins {k} points in {round}.", round=st.rng.choice(ROUNDS))


@template("score_bonus", "step", "score", "{S} gets a bonus of {k} points for {reason}.")
def _score_bonus(st: State) -> bool:
    reasons = ("speed", "a perfect round", "teamwork", "a hard question", "a lucky guess", "style", "a streak")
    return add(st, "bonus", "{S} gets a bonus of {k} points for {reason}.", reason=st.rng.choice(reasons))


@template("score_lose", "step", "score", "{S} loses {k} points for {mistake}.", weight=2)
def _score_lose(st: State) -> bool:
    k = st.rng.randint(2, 40)  # a score may go below zero
    st.say("{S} loses {k} points for {mistake}.", k=k, mistake=st.rng.choice(MISTAKES))
    st.apply("-", "lost", k)
    return True


@template("score_double", "step", "score", "A {lucky} doubles {P} score.")
def _score_double(st: State) -> bool:
    if abs(st.value) * 2 > MAX_VALUE:
        return False
    st.say("A {lucky} doubles {P} score.", lucky=st.rng.choice(LUCKY))
    st.apply_literal("*", 2)
    return True
