"""Step templates of the ``arith`` task on items and groups: one sentence, one operation each.

Every step checks that it fits the running quantity (kind, size, divisibility, who acts,
what the items are) and returns ``False`` otherwise, so the composer can pick another.
Amounts are drawn so numbers stay grade-school sized (operands 2..40, running values up
to :data:`~distillery.builtin.arith.state.MAX_VALUE`) and every ``//`` is exact. The
helpers here are shared with :mod:`.steps_more` (money, rates, temperatures, scores).
"""

from __future__ import annotations

from distillery.builtin.arith import lexicon as lx
from distillery.builtin.arith.state import MAX_VALUE, State, template


def divisors(value: object, low: int, high: int, min_quotient: int = 2) -> list[int]:
    """Divisors of a positive int ``value`` in ``[low, high]`` leaving a quotient >= ``min_quotient``."""
    if not isinstance(value, int) or value <= 0:
        return []
    return [d for d in range(low, high + 1) if value % d == 0 and value // d >= min_quotient]


def take(st: State, low: int = 2, high: int = 40) -> int | None:
    """An amount to remove that leaves at least 1 (None when the quantity is too small)."""
    top = min(high, int(st.value) - 1)
    return st.rng.randint(low, top) if top >= low else None


def is_person(st: State) -> bool:
    """Whether the story's actor is a person (not a business or machine)."""
    return st.agent is not None and st.agent.person


def tagged(st: State, tag: str) -> bool:
    """Whether the story's entity carries ``tag`` (see :class:`~.lexicon.Entity`)."""
    return st.entity is not None and tag in st.entity.tags


def add(st: State, operand: str, pattern: str, **slots: object) -> bool:
    """Add a random 2..40 named ``operand``, saying ``pattern``; False if too large."""
    k = st.rng.randint(2, 40)
    if st.value + k > MAX_VALUE:
        return False
    st.say(pattern, k=k, **slots)
    st.apply("+", operand, k)
    return True


def sub(st: State, operand: str, pattern: str, **slots: object) -> bool:
    """Subtract a random amount (leaving at least 1), saying ``pattern``; False if too small."""
    k = take(st)
    if k is None:
        return False
    st.say(pattern, k=k, **slots)
    st.apply("-", operand, k)
    return True


# -- items: more ----------------------------------------------------------------------------
@template("buy_more", "step", "items", "{S} {buys} {k} more {items}.", weight=2)
def _buy_more(st: State) -> bool:
    return add(st, "bought", "{S} {buys} {k} more {items}.", buys=st.rng.choice(lx.BUY_VERBS))


@template("receive", "step", "items", "{Friend} gives {O} {k} more {items}.", weight=2)
def _receive(st: State) -> bool:
    return is_person(st) and add(st, "received", "{friend} gives {O} {k} more {items}.", friend=st.friend())


@template("delivery", "step", "items", "{Deliverer} brings {k} more {items} to {Org}.", weight=2)
def _delivery(st: State) -> bool:
    if is_person(st):
        return False
    return add(st, "delivered", "{who} brings {k} more {items} to {Name}.", who=st.rng.choice(lx.DELIVERERS))


@template("find", "step", "items", "{S} finds {k} more {items} {place}.")
def _find(st: State) -> bool:
    if not (is_person(st) and tagged(st, "findable")):
        return False
    return add(st, "found", "{S} finds {k} more {items} {place}.", place=st.rng.choice(lx.FIND_PLACES))


@template("make", "step", "items", "{S} {bakes} {k} more {items}.")
def _make(st: State) -> bool:
    if st.entity is None or not st.entity.make_verb:
        return False
    return add(st, "made", "{S} {verb} {k} more {items}.", verb=st.entity.make_verb)


@template("pick", "step", "items", "{S} picks {k} more {items} from {place}.")
def _pick(st: State) -> bool:
    if not (is_person(st) and tagged(st, "pickable")):
        return False
    return add(st, "picked", "{S} picks {k} more {items} from {place}.", place=st.rng.choice(lx.PICK_PLACES))


# -- items: fewer ---------------------------------------------------------------------------
@template("give_away", "step", "items", "{S} gives {k} {items} to {Friend}.", weight=2)
def _give_away(st: State) -> bool:
    return is_person(st) and sub(st, "given", "{S} gives {k} {items} to {friend}.", friend=st.friend())


@template("donate", "step", "items", "{S} donates {k} {items} to {charity}.")
def _donate(st: State) -> bool:
    return sub(st, "donated", "{S} donates {k} {items} to {charity}.", charity=st.rng.choice(lx.CHARITIES))


@template("eat", "step", "items", "{S} eats {k} of the {items}.")
def _eat(st: State) -> bool:
    if not (is_person(st) and tagged(st, "food")):
        return False
    return sub(st, "eaten", "{S} eats {k} of the {items}.")


@template("sell", "step", "items", "{S} sells {k} {items} {market}.", weight=2)
def _sell(st: State) -> bool:
    return sub(st, "sold", "{S} sells {k} {items} {market}.", market=st.rng.choice(lx.MARKETS))


@template("lose", "step", "items", "{S} loses {k} {items} {place}.")
def _lose(st: State) -> bool:
    if not (is_person(st) and tagged(st, "findable")):
        return False
    return sub(st, "lost", "{S} loses {k} {items} {place}.", place=st.rng.choice(lx.LOSE_PLACES))


@template("damaged", "step", "items", "{k} of the {items} are damaged, so {S} throws them away.")
def _damaged(st: State) -> bool:
    return sub(st, "damaged", "{k} of the {items} are damaged, so {S} throws them away.")


@template("use", "step", "items", "{S} uses {k} {items} for {project}.")
def _use(st: State) -> bool:
    if not (is_person(st) and tagged(st, "usable")):
        return False
    return sub(st, "used", "{S} uses {k} {items} for {project}.", project=st.rng.choice(lx.PROJECTS))


# -- items: times and halves ------------------------------------------------------------
LATER = ("After a month", "By summer", "A year later", "By the end of the week", "After a few weeks", "By winter")


@template("times", "step", "items", "{Later}, {S} has {k} times as many {items} as before.")
def _times(st: State) -> bool:
    k = st.rng.randint(2, 5)
    if st.value * k > MAX_VALUE:
        return False
    st.say("{later}, {S} has {k} times as many {items} as before.", later=st.rng.choice(LATER), k=k)
    st.apply("*", "times", k)
    return True


@template("double", "step", "items", "{S} doubles {P} {items}.")
def _double(st: State) -> bool:
    if st.value * 2 > MAX_VALUE:
        return False
    st.say("{S} doubles {pos} {items}.", pos=st.agent.pos if st.agent else "the")
    st.apply_literal("*", 2)
    return True


@template("triple", "step", "items", "{Later}, the number of {items} triples.")
def _triple(st: State) -> bool:
    if st.value * 3 > MAX_VALUE:
        return False
    st.say("{later}, the number of {items} triples.", later=st.rng.choice(LATER))
    st.apply_literal("*", 3)
    return True


@template("half_give", "step", "items", "{S} gives half of the {items} to {Friend}.")
def _half_give(st: State) -> bool:
    if not is_person(st) or st.value < 4 or st.value % 2:
        return False
    st.say("{S} gives half of the {items} to {friend}.", friend=st.friend())
    st.apply_literal("//", 2)
    return True


# -- items -> groups, shares, money -------------------------------------------------------
def _pack(st: State, pattern: str) -> bool:
    sizes = divisors(st.value, 2, 12)
    if not sizes or st.entity is None:
        return False
    k = st.rng.choice(sizes)
    container = st.rng.choice([c for c in st.entity.containers if c != st.container] or st.entity.containers)
    st.say(pattern, k=k, containers=container.plural, container=container.singular, prep=container.prep)
    st.container, st.packed = container, True
    st.apply("//", f"per_{container.singular}", k, kind="groups", var=container.var)
    return True


@template("pack", "step", "items", "{S} packs the {items} into {containers} of {k}.", weight=2)
def _pack_into(st: State) -> bool:
    return _pack(st, "{S} packs the {items} into {containers} of {k}.")


@template("pack_each", "step", "items", "{S} puts {k} {items} {prep} each {container}.", weight=2)
def _pack_each(st: State) -> bool:
    return _pack(st, "{S} puts {k} {items} {prep} each {container}.")


def _share(st: State, people: tuple[str, str], pattern: str) -> bool:
    if tagged(st, "divisible") and st.rng.random() < 0.6:
        k = st.rng.randint(2, 8)
    else:
        sizes = divisors(st.value, 2, 10, min_quotient=1)
        if not sizes:
            return False
        k = st.rng.choice(sizes)
    st.people = people
    st.say(pattern, k=k, people=people[0])
    st.apply("frac", people[0], k, kind="share", var=f"per_{people[1]}")
    return True


@template("share_friends", "step", "items", "{S} shares the {items} equally among {k} friends.", terminal=True,
          weight=2)
def _share_friends(st: State) -> bool:
    return is_person(st) and _share(st, ("friends", "friend"), "{S} shares the {items} equally among {k} friends.")


@template("share_group", "step", "items", "{S} splits the {items} evenly between {k} {people}.", terminal=True,
          weight=2)
def _share_group(st: State) -> bool:
    people = st.rng.choice(lx.SHARE_PEOPLE[1:])
    return _share(st, people, "{S} splits the {items} evenly between {k} {people}.")


@template("share_cut", "step", "items", "{S} cuts up the {items} and divides them equally among {k} {people}.",
          terminal=True, weight=6)
def _share_cut(st: State) -> bool:
    if not tagged(st, "divisible"):
        return False
    people = st.rng.choice(lx.SHARE_PEOPLE)
    k = st.rng.randint(2, 9)
    st.people = people
    st.say("{S} cuts up the {items} and divides them equally among {k} {people}.", k=k, people=people[0])
    st.apply("frac", people[0], k, kind="share", var=f"per_{people[1]}")
    return True


@template("sell_each", "step", "items", "{S} sells all the {items} for ${k} each.", weight=2)
def _sell_each(st: State) -> bool:
    k = st.rng.randint(2, 12)
    if st.value * k > MAX_VALUE:
        return False
    st.say("{S} sells all the {items} for ${k} each.", k=k)
    st.apply("*", "price", k, kind="money", var="money")
    return True


# -- groups ---------------------------------------------------------------------------------
@template("groups_more", "step", "groups", "{S} {buys} {k} more {containers} of {items}.")
def _groups_more(st: State) -> bool:
    k = st.rng.randint(2, 12)
    st.say("{S} {buys} {k} more {containers} of {items}.", buys=st.rng.choice(lx.BUY_VERBS), k=k)
    st.apply("+", "bought", k)
    return True


@template("groups_give", "step", "groups", "{S} gives {k} of the {containers} to {Friend}.")
def _groups_give(st: State) -> bool:
    k = take(st, 2, 12)
    if k is None or not is_person(st):
        return False
    st.say("{S} gives {k} of the {containers} to {friend}.", k=k, friend=st.friend())
    st.apply("-", "given", k)
    return True


@template("groups_sell_each", "step", "groups", "{S} sells each {container} for ${k}.")
def _groups_sell_each(st: State) -> bool:
    k = st.rng.randint(2, 20)
    if st.value * k > MAX_VALUE:
        return False
    st.say("{S} sells each {container} for ${k}.", k=k)
    st.apply("*", "price", k, kind="money", var="money")
    return True


@template("unpack", "step", "groups", "Each {container} holds {k} {items}.", weight=3)
def _unpack(st: State) -> bool:
    if st.packed or st.container is None or st.entity is None:
        return False
    k = st.rng.randint(2, 25)
    if st.value * k > MAX_VALUE:
        return False
    st.say("Each {container} holds {k} {items}.", k=k)
    st.apply("*", f"per_{st.container.singular}", k, kind="items", var=st.entity.var)
    return True
