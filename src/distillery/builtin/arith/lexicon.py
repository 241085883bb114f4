"""Word lists that fill the slots of the ``arith`` templates: names, entities, places, units.

Every list here is a random slot of the story templates in :mod:`.templates`. Long lists
matter twice: they make the 100k-problem duplicate rate small, and they make any 13-word
window of a question unlikely to reappear in another question (the decontamination rule
of :mod:`distillery.text`).
"""

from __future__ import annotations

from dataclasses import dataclass

FEMALE_NAMES: tuple[str, ...] = (
    "Mia", "Emma", "Olivia", "Ava", "Sophia", "Isabella", "Amelia", "Harper", "Ella", "Lily",
    "Chloe", "Grace", "Zoe", "Nora", "Hannah", "Aria", "Leah", "Ruby", "Alice", "Clara",
    "Maya", "Sara", "Julia", "Lucy", "Anna", "Eva", "Ivy", "Rosa", "Nina", "Lena",
    "Priya", "Aisha", "Fatima", "Mei", "Yuki", "Sofia", "Elena", "Camila", "Layla", "Zara",
    "Naomi", "Tara", "Jade", "Rita", "Dina", "Kira", "Nadia", "Maria", "Paula", "Wendy",
    "Olga", "Ines", "Hana", "Amara", "Gwen", "Beth", "Rachel", "Kate", "Molly", "Emily",
)

MALE_NAMES: tuple[str, ...] = (
    "Liam", "Noah", "Oliver", "James", "Lucas", "Mason", "Ethan", "Leo", "Jack", "Owen",
    "Ben", "Sam", "Max", "Tom", "Adam", "Ryan", "Eli", "Omar", "Ali", "Ravi",
    "Arjun", "Kenji", "Hiro", "Diego", "Mateo", "Carlos", "Pablo", "Ivan", "Felix", "Hugo",
    "Jonas", "Luca", "Marco", "Nico", "Theo", "Finn", "Kai", "Yusuf", "Amir", "Tariq",
    "Kofi", "Jamal", "Malik", "Caleb", "Dylan", "Logan", "Aaron", "David", "Peter", "Paul",
    "Mark", "Henry", "Jake", "Luke", "Victor", "Oscar", "Ahmed", "Rohan", "Wei", "Chen",
)


@dataclass(frozen=True)
class Container:
    """A thing items are packed into: ``plural`` ("boxes"), ``singular`` ("box"), ``prep`` ("in")."""

    plural: str
    singular: str
    prep: str = "in"

    @property
    def var(self) -> str:
        """Program variable name of a count of these containers (``boxes``)."""
        return self.plural.replace(" ", "_")


BOX = Container("boxes", "box")
BAG = Container("bags", "bag")
JAR = Container("jars", "jar")
BASKET = Container("baskets", "basket")
CRATE = Container("crates", "crate")
PACK = Container("packs", "pack")
TRAY = Container("trays", "tray")
TIN = Container("tins", "tin")
CARTON = Container("cartons", "carton")
SHELF = Container("shelves", "shelf", "on")
BIN = Container("bins", "bin")
VASE = Container("vases", "vase")
BUCKET = Container("buckets", "bucket")
ALBUM = Container("albums", "album")
CUP = Container("cups", "cup")
SACK = Container("sacks", "sack")
ENVELOPE = Container("envelopes", "envelope")
BUNDLE = Container("bundles", "bundle")
BOWL = Container("bowls", "bowl")
CAN = Container("cans", "can")


@dataclass(frozen=True)
class Entity:
    """A countable thing of a story.

    Attributes:
        plural, singular: display forms ("apples", "apple").
        var: program variable name of a count of it (snake_case).
        tags: among ``food`` (may be eaten), ``divisible`` (may be shared into fractions),
            ``findable`` (may be found or lost), ``pickable`` (grows; may be picked),
            ``usable`` (used up in projects).
        containers: what it is packed into.
        make_verb: third-person verb for making more of it ("bakes"), or "" if not made.
    """

    plural: str
    singular: str
    var: str
    tags: frozenset[str]
    containers: tuple[Container, ...]
    make_verb: str = ""


def _e(
    plural: str, singular: str, tags: str, containers: tuple[Container, ...], make: str = "", var: str = ""
) -> Entity:
    return Entity(plural, singular, var or plural.replace(" ", "_"), frozenset(tags.split()), containers, make)


ENTITIES: tuple[Entity, ...] = (
    _e("apples", "apple", "food pickable", (BAG, BASKET, CRATE, BOX)),
    _e("oranges", "orange", "food pickable", (BAG, BASKET, CRATE)),
    _e("pears", "pear", "food pickable", (BAG, BASKET, CRATE)),
    _e("peaches", "peach", "food pickable", (BASKET, CRATE, BOX)),
    _e("plums", "plum", "food pickable", (BAG, BASKET, BOWL)),
    _e("lemons", "lemon", "food pickable", (BAG, CRATE, BOWL)),
    _e("mangoes", "mango", "food pickable", (BOX, CRATE, BASKET)),
    _e("strawberries", "strawberry", "food pickable", (BASKET, BOX, CUP)),
    _e("tomatoes", "tomato", "food pickable", (BASKET, CRATE, BAG)),
    _e("potatoes", "potato", "food pickable", (SACK, BAG, CRATE)),
    _e("carrots", "carrot", "food pickable", (BAG, BUNDLE, BASKET)),
    _e("eggs", "egg", "food", (CARTON, BASKET, TRAY)),
    _e("cookies", "cookie", "food", (BOX, TIN, BAG, JAR), "bakes"),
    _e("cupcakes", "cupcake", "food", (BOX, TRAY), "bakes"),
    _e("muffins", "muffin", "food", (BOX, BAG, TRAY), "bakes"),
    _e("donuts", "donut", "food", (BOX, BAG), "makes"),
    _e("bagels", "bagel", "food", (BAG, BASKET), "bakes"),
    _e("brownies", "brownie", "food divisible", (TRAY, TIN, BOX), "bakes"),
    _e("pies", "pie", "food divisible", (BOX, BASKET), "bakes"),
    _e("cakes", "cake", "food divisible", (BOX, TRAY), "bakes"),
    _e("pizzas", "pizza", "food divisible", (BOX, BAG), "makes"),
    _e("sandwiches", "sandwich", "food divisible", (BAG, BOX, BASKET), "makes"),
    _e("watermelons", "watermelon", "food divisible pickable", (CRATE, SACK)),
    _e("chocolate bars", "chocolate bar", "food divisible", (BOX, BAG, PACK)),
    _e("granola bars", "granola bar", "food divisible", (BOX, PACK)),
    _e("pancakes", "pancake", "food divisible", (TRAY, BOX), "makes"),
    _e("burritos", "burrito", "food divisible", (BOX, BAG, TRAY), "makes"),
    _e("loaves of bread", "loaf of bread", "food divisible", (BAG, BASKET, BOX), "bakes", "loaves"),
    _e("lasagnas", "lasagna", "food divisible", (TRAY, BOX), "makes"),
    _e("pumpkins", "pumpkin", "food divisible pickable", (CRATE, SACK, BASKET)),
    _e("stickers", "sticker", "findable usable", (PACK, ALBUM, ENVELOPE)),
    _e("marbles", "marble", "findable", (JAR, BAG, BOX)),
    _e("stamps", "stamp", "findable", (ALBUM, ENVELOPE, BOX)),
    _e("baseball cards", "baseball card", "findable", (PACK, ALBUM, BOX)),
    _e("seashells", "seashell", "findable", (JAR, BUCKET, BAG)),
    _e("beads", "bead", "findable usable", (JAR, BAG, CUP)),
    _e("buttons", "button", "findable usable", (JAR, BOX, BAG)),
    _e("pebbles", "pebble", "findable", (BUCKET, JAR, BAG)),
    _e("comic books", "comic book", "findable", (BOX, SHELF, BIN)),
    _e("postcards", "postcard", "findable", (BOX, ALBUM, ENVELOPE)),
    _e("pencils", "pencil", "findable usable", (BOX, PACK, CUP)),
    _e("crayons", "crayon", "findable usable", (BOX, PACK, CUP)),
    _e("markers", "marker", "findable usable", (PACK, BOX, CUP)),
    _e("notebooks", "notebook", "usable", (BOX, SHELF, BUNDLE)),
    _e("erasers", "eraser", "findable usable", (BOX, PACK, BAG)),
    _e("balloons", "balloon", "usable", (BAG, PACK, BUNDLE)),
    _e("candles", "candle", "usable", (BOX, PACK, JAR), "makes"),
    _e("toy cars", "toy car", "findable", (BOX, BIN, SHELF)),
    _e("blocks", "block", "findable", (BIN, BUCKET, BOX)),
    _e("tennis balls", "tennis ball", "findable", (CAN, BAG, BUCKET)),
    _e("books", "book", "findable", (BOX, SHELF, BIN)),
    _e("roses", "rose", "pickable", (VASE, BUNDLE, BASKET)),
    _e("tulips", "tulip", "pickable", (VASE, BUNDLE, BASKET)),
    _e("sunflowers", "sunflower", "pickable", (VASE, BUNDLE, BUCKET)),
    _e("bracelets", "bracelet", "findable", (BOX, BAG, BIN), "makes"),
    _e("paper cranes", "paper crane", "", (BOX, BAG, BIN), "folds"),
    _e("scarves", "scarf", "", (BOX, BAG, BIN), "knits"),
    _e("keychains", "keychain", "findable", (BOX, BAG, JAR), "makes"),
)


@dataclass(frozen=True)
class Org:
    """A business that owns items: ``name`` ("bakery", owned by a named person) and what it stocks."""

    name: str
    entities: tuple[str, ...]


ORGS: tuple[Org, ...] = (
    Org("bakery", ("cookies", "cupcakes", "muffins", "bagels", "brownies", "pies", "cakes", "donuts", "loaves of bread")),
    Org("cafe", ("muffins", "sandwiches", "cookies", "bagels", "brownies", "granola bars", "pancakes")),
    Org("pizza shop", ("pizzas", "lasagnas", "sandwiches")),
    Org("food truck", ("burritos", "sandwiches", "pancakes", "donuts")),
    Org("fruit stand", ("apples", "oranges", "pears", "peaches", "plums", "mangoes", "watermelons", "pumpkins")),
    Org("grocery store", ("eggs", "tomatoes", "potatoes", "carrots", "lemons", "chocolate bars")),
    Org("bookstore", ("books", "comic books", "postcards", "notebooks")),
    Org("toy store", ("toy cars", "blocks", "marbles", "tennis balls", "balloons", "keychains")),
    Org("flower shop", ("roses", "tulips", "sunflowers")),
    Org("farm", ("eggs", "apples", "potatoes", "carrots", "watermelons", "tomatoes", "pumpkins")),
    Org("art store", ("crayons", "markers", "pencils", "beads", "stickers", "candles")),
    Org("gift shop", ("postcards", "keychains", "candles", "stamps", "bracelets")),
)

ENTITY_BY_PLURAL: dict[str, Entity] = {e.plural: e for e in ENTITIES}

BUY_VERBS = ("buys", "gets", "picks up", "orders")
FIND_PLACES = (
    "under the couch", "in the garage", "at the park", "in the attic", "in a drawer", "in the closet",
    "on the playground", "under the bed", "in the backyard", "in an old box", "in the car", "at school",
)
PICK_PLACES = ("the garden", "the orchard", "the backyard", "a farm", "the field", "the greenhouse")
MARKETS = (
    "at the market", "at a yard sale", "at the school fair", "to a neighbor", "online", "at the flea market",
    "to a classmate", "at a garage sale", "to a friend",
)
LOSE_PLACES = (
    "on the bus", "at school", "on the way home", "at the park", "at the beach", "during a trip",
    "at the mall", "in the snow",
)
CHARITIES = (
    "a food bank", "a school", "a hospital", "a shelter", "the library", "a summer camp", "a nursing home",
    "a children's club",
)
PROJECTS = (
    "a school project", "an art project", "a birthday card", "a science fair", "a poster", "a scrapbook",
    "a costume", "a party",
)
SHARE_PEOPLE: tuple[tuple[str, str], ...] = (
    ("friends", "friend"), ("children", "child"), ("classmates", "classmate"), ("cousins", "cousin"),
    ("teammates", "teammate"), ("neighbors", "neighbor"), ("students", "student"), ("guests", "guest"),
)
DELIVERERS = ("A truck", "A supplier", "A delivery van", "A farmer", "A driver", "The owner")

CHORES = (
    "by walking dogs", "by mowing lawns", "by washing cars", "by babysitting", "by selling lemonade",
    "by raking leaves", "by helping a neighbor", "by tutoring", "by cleaning windows", "by watering plants",
)
GIFT_OCCASIONS = (
    "for a birthday", "as a gift", "for helping out", "for good grades", "for the holidays", "as a reward",
    "for the trip",
)
PERSON_THINGS = (
    "a book", "lunch", "a movie ticket", "a toy", "snacks", "a new hat", "a game", "a puzzle", "a pair of socks",
    "a comic book", "a kite", "a backpack", "art supplies", "a gift",
)
ORG_THINGS = ("flour", "new shelves", "repairs", "electricity", "paint", "cleaning supplies", "a new sign")
WALLETS = ("wallet", "piggy bank", "pocket", "savings jar", "purse", "coin box")


@dataclass(frozen=True)
class Rate:
    """A repeated activity: ``verb_s`` ``items`` every ``unit``.

    Attributes:
        verb_s, verb: third-person and base verb ("reads", "read").
        items: what is counted ("pages"); ``var`` its variable name.
        units: allowed time units, singular/plural pairs.
        yields: entity plural if the activity produces items one then owns (crafts), else "".
        money: whether the items are dollars.
    """

    verb_s: str
    verb: str
    items: str
    var: str
    units: tuple[tuple[str, str], ...]
    yields: str = ""
    money: bool = False


DAY, HOUR, WEEK, MINUTE = ("day", "days"), ("hour", "hours"), ("week", "weeks"), ("minute", "minutes")

PERSON_RATES: tuple[Rate, ...] = (
    Rate("reads", "read", "pages", "pages", (DAY, HOUR)),
    Rate("walks", "walk", "miles", "miles", (DAY, WEEK)),
    Rate("runs", "run", "kilometers", "kilometers", (DAY, WEEK)),
    Rate("swims", "swim", "laps", "laps", (DAY, WEEK)),
    Rate("solves", "solve", "math problems", "math_problems", (DAY, HOUR)),
    Rate("writes", "write", "pages", "pages", (DAY, WEEK)),
    Rate("types", "type", "emails", "emails", (DAY, HOUR)),
    Rate("plants", "plant", "trees", "trees", (DAY, HOUR)),
    Rate("folds", "fold", "paper cranes", "paper_cranes", (DAY, HOUR), "paper cranes"),
    Rate("bakes", "bake", "cookies", "cookies", (DAY, HOUR), "cookies"),
    Rate("makes", "make", "bracelets", "bracelets", (DAY, WEEK), "bracelets"),
    Rate("knits", "knit", "scarves", "scarves", (WEEK,), "scarves"),
    Rate("collects", "collect", "seashells", "seashells", (DAY, HOUR), "seashells"),
    Rate("picks", "pick", "strawberries", "strawberries", (DAY, HOUR), "strawberries"),
)
MACHINE_RATES: tuple[tuple[str, Rate], ...] = (
    ("a machine", Rate("makes", "make", "toy cars", "toy_cars", (HOUR, MINUTE))),
    ("a printer", Rate("prints", "print", "pages", "pages", (MINUTE, HOUR))),
    ("a factory", Rate("produces", "produce", "bottles", "bottles", (HOUR, DAY))),
    ("a bakery oven", Rate("bakes", "bake", "loaves", "loaves", (HOUR,))),
    ("a pump", Rate("fills", "fill", "buckets", "buckets", (MINUTE, HOUR))),
    ("a robot", Rate("sorts", "sort", "packages", "packages", (MINUTE, HOUR))),
    ("a bee", Rate("visits", "visit", "flowers", "flowers", (MINUTE,))),
    ("a hen house", Rate("gives", "give", "eggs", "eggs", (DAY, WEEK))),
    ("a loom", Rate("weaves", "weave", "scarves", "scarves", (DAY, WEEK))),
    ("a 3D printer", Rate("prints", "print", "toy figures", "toy_figures", (HOUR, DAY))),
    ("a conveyor belt", Rate("carries", "carry", "boxes", "boxes", (MINUTE, HOUR))),
    ("a candy machine", Rate("wraps", "wrap", "candies", "candies", (MINUTE, HOUR))),
    ("a juicer", Rate("squeezes", "squeeze", "oranges", "oranges", (MINUTE, HOUR))),
    ("a crane", Rate("lifts", "lift", "crates", "crates", (HOUR, DAY))),
    ("a sewing machine", Rate("sews", "sew", "shirts", "shirts", (HOUR, DAY))),
    ("a cookie machine", Rate("bakes", "bake", "cookies", "cookies", (MINUTE, HOUR))),
)
WAGE_CHORES = (
    "babysitting", "walking dogs", "at the bakery", "mowing lawns", "at the car wash", "tutoring", "at the library",
    "at a cafe",
)

CITIES = (
    "Oslo", "Denver", "Chicago", "Boston", "Toronto", "Moscow", "Helsinki", "Calgary", "Seoul", "Berlin",
    "Vienna", "Warsaw", "Prague", "Montreal", "Minneapolis", "Anchorage", "Beijing", "Tokyo", "Madrid",
    "Dublin", "London", "Paris", "Kyiv", "Riga", "Stockholm", "Reykjavik", "Ottawa", "Winnipeg", "Zurich",
    "Munich",
)
TIMES_OF_DAY = (
    "at dawn", "early in the morning", "at 6 a.m.", "at sunrise", "at 7 a.m.", "before breakfast",
)
LATER_TIMES = (
    "an hour later", "by 9 a.m.", "by mid-morning", "at 11 a.m.", "by noon", "after lunch", "at 2 p.m.",
    "in the afternoon", "by 4 p.m.", "by 5 p.m.", "by sunset", "at 7 p.m.", "in the evening",
    "by 9 p.m.", "at night", "by midnight",
)
RISE_VERBS_BASE = ("rise", "go up", "climb", "increase", "jump")
FALL_NOUNS = ("drop", "fall", "dip", "decrease")
WARMERS = ("sun", "warm wind", "bright sunshine", "clear sky", "warm breeze")
COOLERS = ("cold wind", "storm", "rain shower", "snowfall", "cold front", "thick fog")
GAMES = (
    "video game", "quiz game", "board game", "card game", "trivia contest", "spelling game", "pinball game",
    "math contest",
)
