"""Frames (opening sentences) and questions of the ``arith`` task.

A frame introduces the actor and sets the running quantity (no arithmetic); a question
asks for the final quantity (no arithmetic either), so a problem's difficulty is exactly
its number of step templates (:mod:`.steps`).
"""

from __future__ import annotations

from distillery.builtin.arith import lexicon as lx
from distillery.builtin.arith.state import Agent, State, template

SPOTS = ("bedroom", "backpack", "desk", "kitchen", "room", "closet", "locker", "garage")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def person(st: State) -> Agent:
    """A random named person (she/her or he/his); the name is reserved for the story."""
    female = st.rng.random() < 0.5
    name = st.rng.choice(lx.FEMALE_NAMES if female else lx.MALE_NAMES)
    st.names_used.add(name)
    return Agent(name, "she", "her", "her", True) if female else Agent(name, "he", "him", "his", True)


def _person_items(st: State) -> None:
    st.agent = person(st)
    st.entity = st.rng.choice(lx.ENTITIES)
    st.start("items", st.entity.var, st.rng.randint(5, 60))


# -- frames: items ------------------------------------------------------------------------
@template("have", "frame", "items", "{S} has {n} {items}.", weight=3)
def _have(st: State) -> bool:
    _person_items(st)
    st.say("{Name} has {n} {items}.", n=st.value)
    return True


@template("keep", "frame", "items", "{S} keeps {n} {items} in {P} {spot}.", weight=2)
def _keep(st: State) -> bool:
    _person_items(st)
    st.say("{Name} keeps {n} {items} in {pos} {spot}.", n=st.value, pos=st.agent.pos, spot=st.rng.choice(SPOTS))
    return True


@template("on_day", "frame", "items", "On {day}, {S} has {n} {items}.", weight=2)
def _on_day(st: State) -> bool:
    _person_items(st)
    st.say("On {day}, {Name} has {n} {items}.", day=st.rng.choice(DAYS), n=st.value)
    return True


def _org_items(st: State) -> None:
    org = st.rng.choice(lx.ORGS)
    st.agent = Agent(f"{person(st).name}'s {org.name}", "it", "it", "its", False, f"the {org.name}")
    st.entity = lx.ENTITY_BY_PLURAL[st.rng.choice(org.entities)]
    st.start("items", st.entity.var, st.rng.randint(20, 120))


@template("org_stock", "frame", "items", "{Owner}'s {org} has {n} {items} in stock.")
def _org_stock(st: State) -> bool:
    _org_items(st)
    st.say("{Name} has {n} {items} in stock.", n=st.value)
    return True


@template("org_morning", "frame", "items", "{Owner}'s {org} starts the day with {n} {items}.")
def _org_morning(st: State) -> bool:
    _org_items(st)
    st.say("{Name} starts the day with {n} {items}.", n=st.value)
    return True


# -- frames: groups -----------------------------------------------------------------------
def _person_groups(st: State) -> None:
    st.agent = person(st)
    st.entity = st.rng.choice(lx.ENTITIES)
    st.container = st.rng.choice(st.entity.containers)
    st.start("groups", st.container.var, st.rng.randint(2, 12))


@template("groups_have", "frame", "groups", "{S} has {n} {containers} of {items}.")
def _groups_have(st: State) -> bool:
    _person_groups(st)
    st.say("{Name} has {n} {containers} of {items}.", n=st.value)
    return True


@template("groups_bought", "frame", "groups", "{S} {buys} {n} {containers} of {items}.")
def _groups_bought(st: State) -> bool:
    _person_groups(st)
    st.say("{Name} {buys} {n} {containers} of {items}.", buys=st.rng.choice(lx.BUY_VERBS), n=st.value)
    return True


# -- frames: money ------------------------------------------------------------------------
def _person_money(st: State) -> None:
    st.agent = person(st)
    st.start("money", "money", st.rng.randint(10, 100))


@template("money_have", "frame", "money", "{S} has ${n}.")
def _money_have(st: State) -> bool:
    _person_money(st)
    st.say("{Name} has ${n}.", n=st.value)
    return True


@template("money_wallet", "frame", "money", "{S} has ${n} in {P} {wallet}.")
def _money_wallet(st: State) -> bool:
    _person_money(st)
    st.say("{Name} has ${n} in {pos} {wallet}.", n=st.value, pos=st.agent.pos, wallet=st.rng.choice(lx.WALLETS))
    return True


@template("money_saved", "frame", "money", "{S} saved ${n} from {P} allowance.")
def _money_saved(st: State) -> bool:
    _person_money(st)
    st.say("{Name} saved ${n} from {pos} allowance.", n=st.value, pos=st.agent.pos)
    return True


# -- frames: rates ------------------------------------------------------------------------
def _start_rate(st: State, rate: lx.Rate, low: int, high: int) -> None:
    st.rate = rate
    st.unit = st.rng.choice(rate.units)
    st.start("rate", f"{rate.var}_per_{st.unit[0]}", st.rng.randint(low, high))


@template("rate_person", "frame", "rate", "{S} {verb_s} {n} {items} every {unit}.", weight=2)
def _rate_person(st: State) -> bool:
    st.agent = person(st)
    rate = st.rng.choice(lx.PERSON_RATES)
    _start_rate(st, rate, 2, 30)
    st.say("{Name} {verb_s} {n} {what} every {unit}.", verb_s=rate.verb_s, n=st.value, what=rate.items,
           unit=st.unit[0])
    return True


@template("rate_machine", "frame", "rate", "{Owner}'s {machine} {verb_s} {n} {items} every {unit}.")
def _rate_machine(st: State) -> bool:
    machine, rate = st.rng.choice(lx.MACHINE_RATES)
    owner = person(st)
    noun = machine.split(" ", 1)[1]
    st.agent = Agent(f"{owner.name}'s {noun}", "it", "it", "its", False, f"the {noun}")
    _start_rate(st, rate, 2, 40)
    st.say("{Name} {verb_s} {n} {what} every {unit}.", verb_s=rate.verb_s, n=st.value, what=rate.items,
           unit=st.unit[0])
    return True


WAGE = lx.Rate("earns", "earn", "dollars", "dollars", (lx.HOUR,), money=True)
SAVINGS = lx.Rate("saves", "save", "dollars", "dollars", (lx.WEEK, lx.DAY), money=True)


@template("rate_wage", "frame", "rate", "{S} earns ${n} every hour {chore}.")
def _rate_wage(st: State) -> bool:
    st.agent = person(st)
    _start_rate(st, WAGE, 5, 25)
    st.say("{Name} earns ${n} every hour {chore}.", n=st.value, chore=st.rng.choice(lx.WAGE_CHORES))
    return True


@template("rate_save", "frame", "rate", "{S} saves ${n} every {unit}.")
def _rate_save(st: State) -> bool:
    st.agent = person(st)
    _start_rate(st, SAVINGS, 2, 30)
    st.say("{Name} saves ${n} every {unit}.", n=st.value, unit=st.unit[0])
    return True


# -- frames: temperature and scores ------------------------------------------------------
def _start_temp(st: State) -> None:
    st.agent = person(st)
    st.city = st.rng.choice(lx.CITIES)
    picks = sorted(st.rng.sample(range(len(lx.LATER_TIMES)), st.difficulty))
    st.times = [lx.LATER_TIMES[i] for i in picks]
    value = st.rng.randint(-12, 32)
    st.start("temp", "temperature", value if abs(value) != 1 else 2 * value)


@template("temp_city", "frame", "temp", "{S} lives in {city}. {Time}, it is {n} degrees outside.")
def _temp_city(st: State) -> bool:
    _start_temp(st)
    st.say("{Name} lives in {city}.", city=st.city)
    st.say("{t}, it is {n} degrees outside.", t=st.rng.choice(lx.TIMES_OF_DAY), n=st.value)
    return True


@template("temp_thermo", "frame", "temp", "{S} checks the thermometer in {city} {time}: it shows {n} degrees.")
def _temp_thermo(st: State) -> bool:
    _start_temp(st)
    st.say("{Name} checks the thermometer in {city} {t}, and it shows {n} degrees.", city=st.city,
           t=st.rng.choice(lx.TIMES_OF_DAY), n=st.value)
    return True


def _start_score(st: State) -> None:
    st.agent = person(st)
    st.game = st.rng.choice(lx.GAMES)
    st.start("score", "score", st.rng.randint(0, 60))


@template("score_have", "frame", "score", "{S} has {n} points in a {game}.")
def _score_have(st: State) -> bool:
    _start_score(st)
    st.say("{Name} has {n} points in a {game}.", n=st.value, game=st.game)
    return True


@template("score_round", "frame", "score", "{S} starts the last round of a {game} with {n} points.")
def _score_round(st: State) -> bool:
    _start_score(st)
    st.say("{Name} starts the last round of a {game} with {n} points.", game=st.game, n=st.value)
    return True


# -- questions ----------------------------------------------------------------------------
def _ask(pattern: str):
    def fn(st: State) -> bool:
        slots: dict[str, object] = {
            "city": st.city, "game": st.game, "people": st.people[0], "person": st.people[1], "unit": st.unit[0],
        }
        if st.rate is not None:
            slots.update(what=st.rate.items, verb=st.rate.verb)
        st.say(pattern, **slots)
        return True

    return fn


def _ask_if_loss(pattern: str):
    ask = _ask(pattern)

    def fn(st: State) -> bool:
        return st.had_loss and ask(st)

    return fn


QUESTIONS = (
    ("q_items_now", "items", "How many {items} does {Name} have now?", False),
    ("q_items_left", "items", "How many {items} does {Name} have left?", True),
    ("q_items_end", "items", "How many {items} does {Name} end up with?", False),
    ("q_items_there", "items", "In the end, how many {items} does {Name} have?", False),
    ("q_groups_now", "groups", "How many {containers} does {Name} have now?", False),
    ("q_groups_count", "groups", "How many {containers} of {items} does {Name} have?", False),
    ("q_share_get", "share", "How many {items} does each {person} get?", False),
    ("q_share_receive", "share", "How many {items} will each of the {people} receive?", False),
    ("q_money_now", "money", "How many dollars does {Name} have now?", False),
    ("q_money_left", "money", "How much money does {Name} have left, in dollars?", True),
    ("q_money_end", "money", "How many dollars does {Name} end up with?", False),
    ("q_rate_now", "rate", "How many {what} does {Name} {verb} each {unit} now?", False),
    ("q_rate_pace", "rate", "What is {Name}'s new pace, in {what} per {unit}?", False),
    ("q_total", "total", "How many {what} does {Name} {verb} in total?", False),
    ("q_total_all", "total", "In all, how many {what} does {Name} {verb}?", False),
    ("q_temp_now", "temp", "In {city}, what is the temperature now?", False),
    ("q_temp_final", "temp", "What is {city}'s final temperature, in degrees?", False),
    ("q_score_now", "score", "What is {Name}'s score now?", False),
    ("q_score_end", "score", "How many points does {Name} have after the {game}?", False),
)
for _qid, _kind, _pattern, _needs_loss in QUESTIONS:
    template(_qid, "question", _kind, _pattern)((_ask_if_loss if _needs_loss else _ask)(_pattern))
