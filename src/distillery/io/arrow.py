"""Records <-> Arrow tables, with seed columns whose types may differ between batches.

Fixed record fields have fixed Arrow types (:data:`distillery.records.FIXED_TYPES`); the
``seed`` struct's type is inferred per batch and unified across batches when shards are
merged (numbers widen to float64; anything else that disagrees becomes a string).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from distillery.records import FIXED_TYPES, RECORD_FIELDS

# Parquet cannot store a struct without fields; seeds with no fields use this one.
EMPTY_SEED = pa.struct([("_none", pa.null())])


def warm_up() -> None:
    """Pay pyarrow's one-time cost now: its first conversion of Python objects imports pandas
    (about half a second of CPU). A run does it before its requests are in flight, so the first
    shard's write does not stall the event loop meanwhile."""
    pa.array([{"x": 0}])


def _storable(t: pa.DataType) -> pa.DataType:
    """``t`` with every struct without fields (what ``{}`` infers to) made null: Parquet cannot
    store a struct without children, so an empty mapping inside a seed reads back as ``None``."""
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            return pa.null()
        return pa.struct([(f.name, _storable(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_storable(t.value_type))
    return t


def infer_type(values: list[Any]) -> pa.DataType:
    """The Arrow type of ``values`` (seed dicts), tolerant of mixed types: conflicting fields
    become strings; an empty mapping inside becomes null (see :func:`_storable`)."""
    return _storable(_infer(values))


def _infer(values: list[Any]) -> pa.DataType:
    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        types = []
        for v in values:
            try:
                types.append(pa.array([v]).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                types.append(pa.string())
        out = types[0]
        for t in types[1:]:
            out = unify_types(out, t)
        return out


def unify_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type both ``a`` and ``b`` values fit in: null yields to anything, ints widen to
    float64, structs merge field by field, lists unify their items, other conflicts -> string."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        return pa.float64() if (pa.types.is_floating(a) or pa.types.is_floating(b)) else pa.int64()
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields: dict[str, pa.DataType] = {f.name: f.type for f in a}
        for f in b:
            fields[f.name] = unify_types(fields[f.name], f.type) if f.name in fields else f.type
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(unify_types(a.value_type, b.value_type))
    return pa.string()


def coerce(value: Any, typ: pa.DataType) -> Any:
    """``value`` converted so that it fits ``typ`` (see :func:`unify_types`)."""
    if value is None or pa.types.is_null(typ):
        return None
    if pa.types.is_string(typ) and not isinstance(value, str):
        return value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    if pa.types.is_floating(typ) and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if pa.types.is_struct(typ) and isinstance(value, dict):
        return {f.name: coerce(value.get(f.name), f.type) for f in typ}
    if pa.types.is_list(typ) and isinstance(value, list):
        return [coerce(v, typ.value_type) for v in value]
    return value


def record_schema(seed_type: pa.DataType, extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The Arrow schema of records: :data:`RECORD_FIELDS` (``seed`` typed ``seed_type``), then the
    strategy's own fields ``extra`` (name -> type)."""
    fields = [(n, seed_type if n == "seed" else FIXED_TYPES[n]) for n in RECORD_FIELDS]
    return pa.schema(fields + list((extra or {}).items()))


def records_to_table(
    records: list[dict[str, Any]], seed_type: pa.DataType | None = None, extra: dict[str, pa.DataType] | None = None
) -> pa.Table:
    """An Arrow table of ``records`` with the record schema; ``seed`` typed ``seed_type`` or
    inferred; ``extra``: further fields a strategy adds (name -> type).

    Raises:
        pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, OverflowError: a value does not fit its type.
    """
    seeds = [r.get("seed") or {} for r in records]
    if seed_type is None:
        seed_type = infer_type(seeds) if seeds else pa.struct([])
        if pa.types.is_null(seed_type) or (pa.types.is_struct(seed_type) and seed_type.num_fields == 0):
            seed_type = EMPTY_SEED
    schema = record_schema(seed_type, extra)
    columns = {}
    for f in schema:
        if f.name == "seed":
            columns[f.name] = pa.array([coerce(s, seed_type) for s in seeds], type=seed_type)
        else:
            columns[f.name] = pa.array([r.get(f.name) for r in records], type=f.type)
    return pa.table(columns, schema=schema)

