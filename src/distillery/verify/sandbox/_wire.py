"""The plain-data wire format of a program's return value (stdlib only).

The confined process converts the entry function's return value into JSON with type tags
(:func:`dumps`); the parent rebuilds it with :func:`loads`, which only ever constructs
``None``, ``bool``, ``int``, ``float``, ``str``, ``Fraction``, ``list``, ``tuple`` and ``dict``.
No object of the program crosses the process boundary, so no method of a hostile object
(``__eq__``, ``__repr__``, ``__hash__``) can run in the parent.

Encoding: ``None``/``bool``/``str`` and ints below 2**53 and finite floats as JSON scalars;
``["I", hex]`` a larger int, ``["F", "nan"|"inf"|"-inf"]`` a non-finite float,
``["Q", num_hex, den_hex]`` a ``Fraction``, ``["L", [...]]`` a list, ``["T", [...]]`` a
tuple, ``["D", [[k, v], ...]]`` a dict.

Conversions made in the confined process (never calling the value's own overridden
methods for builtin subclasses): subclasses of ``int``/``float``/``str``/``list``/``tuple``/
``dict`` become their base type (``IntEnum``, ``namedtuple``, ``Counter``...); other
registered :mod:`numbers` types (numpy and sympy scalars) become ``int``, ``Fraction`` or
``float``; numpy arrays become nested lists.
"""

from __future__ import annotations

import json
import math
import numbers
from fractions import Fraction
from typing import Any

MAX_DEPTH = 64
MAX_ITEMS = 1_000_000
_SAFE_INT = 1 << 53


class UnsupportedValue(Exception):
    """The value is not plain data, is nested deeper than :data:`MAX_DEPTH`, or is too large."""


def _type_name(value: Any) -> str:
    """``module.QualName`` of ``value``'s type, read through ``type``'s own descriptors."""
    t = type(value)
    try:
        name = type.__dict__["__qualname__"].__get__(t)
        mod = type.__dict__["__module__"].__get__(t)
    except Exception:
        return "<unknown type>"
    return f"{mod}.{name}" if isinstance(mod, str) and mod != "builtins" else str(name)


class _Encoder:
    def __init__(self) -> None:
        self.items = 0

    def enc(self, v: Any, depth: int) -> Any:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise UnsupportedValue(f"value has more than {MAX_ITEMS} items")
        if depth > MAX_DEPTH:
            raise UnsupportedValue(f"value nested deeper than {MAX_DEPTH} levels")
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return v if -_SAFE_INT < v < _SAFE_INT else ["I", format(v, "x")]
        if t is float:
            return v if math.isfinite(v) else ["F", repr(v)]
        if t is Fraction:
            return ["Q", format(v.numerator, "x"), format(v.denominator, "x")]
        if t is list:
            return ["L", [self.enc(x, depth + 1) for x in v]]
        if t is tuple:
            return ["T", [self.enc(x, depth + 1) for x in v]]
        if t is dict:
            return ["D", [[self.enc(k, depth + 1), self.enc(x, depth + 1)] for k, x in v.items()]]
        return self.enc(_to_plain(v), depth + 1)


def _to_plain(v: Any) -> Any:
    """A plain-type stand-in for ``v`` (a builtin subclass or a numeric type), else raise."""
    # Unbound methods of the base types copy the underlying value without dispatching to
    # the subclass's overrides.
    if isinstance(v, int):  # bool cannot be subclassed
        return int.__int__(v)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, Fraction):
        return Fraction(int.__int__(v._numerator), int.__int__(v._denominator))
    if isinstance(v, list):
        return list.copy(v)
    if isinstance(v, tuple):
        return tuple(tuple.__iter__(v))
    if isinstance(v, dict):
        return dict.copy(v)
    if _type_name(v).split(".")[0] == "numpy":
        if _type_name(v) == "numpy.ndarray":
            return v.tolist()
        if hasattr(v, "item"):  # numpy scalar (np.int64, np.bool_, ...): its Python equivalent
            out = v.item()
            if type(out) in (bool, int, float, str):
                return out
    if isinstance(v, numbers.Integral):
        out = int(v)
    elif isinstance(v, numbers.Rational):
        out = Fraction(int(v.numerator), int(v.denominator))
    elif isinstance(v, numbers.Real):
        out = float(v)
    else:
        raise UnsupportedValue(f"unsupported return type {_type_name(v)}")
    if type(out) not in (int, float, Fraction):
        raise UnsupportedValue(f"unsupported return type {_type_name(v)}")
    return out


def dumps(value: Any, max_bytes: int) -> str:
    """``value`` as tagged JSON text of at most ``max_bytes`` characters.

    Raises:
        UnsupportedValue: not plain data, too deep, too many items or too long.
    """
    try:
        encoded = _Encoder().enc(value, 0)
    except RecursionError as exc:
        raise UnsupportedValue("value nested too deeply") from exc
    text = json.dumps(encoded, allow_nan=False, separators=(",", ":"))
    if len(text) > max_bytes:
        raise UnsupportedValue(f"value too large: {len(text)} bytes > {max_bytes}")
    return text


def _dec(obj: Any, depth: int) -> Any:
    if depth > MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if not (isinstance(obj, list) and obj and isinstance(obj[0], str)):
        raise ValueError(f"malformed value: {type(obj).__name__}")
    tag = obj[0]
    if tag == "I" and len(obj) == 2 and isinstance(obj[1], str):
        return int(obj[1], 16)
    if tag == "F" and len(obj) == 2 and obj[1] in ("nan", "inf", "-inf"):
        return float(obj[1])
    if tag == "Q" and len(obj) == 3 and isinstance(obj[1], str) and isinstance(obj[2], str):
        return Fraction(int(obj[1], 16), int(obj[2], 16))
    if tag in ("L", "T") and len(obj) == 2 and isinstance(obj[1], list):
        items = [_dec(x, depth + 1) for x in obj[1]]
        return items if tag == "L" else tuple(items)
    if tag == "D" and len(obj) == 2 and isinstance(obj[1], list):
        out = {}
        for pair in obj[1]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError("malformed dict item")
            key = _dec(pair[0], depth + 1)
            if isinstance(key, list | dict):
                raise ValueError("unhashable dict key")
            out[key] = _dec(pair[1], depth + 1)
        return out
    raise ValueError(f"malformed value tag {tag!r}")


def loads(text: str) -> Any:
    """Rebuild a value from :func:`dumps`'s text; only plain types are constructed.

    Raises:
        ValueError: the text is not a well-formed encoding (e.g. forged by the program).
    """
    try:
        return _dec(json.loads(text), 0)
    except (RecursionError, TypeError) as exc:
        raise ValueError(f"malformed value: {exc}") from exc
