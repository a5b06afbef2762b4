"""OTLP attribute lists (Arrow ``list<struct<key, value: AnyValue>>``) → the store's attribute JSON text and
the promoted columns, with Arrow compute kernels (no per-span Python, no per-element SQL lambda).

This is the common case only: every value a string, a canonical integer or a boolean, and no key or string
that needs JSON escaping. ``attributes_json`` returns None otherwise, and the caller renders that chunk
with the OTLP model's SQL macros (``otlp_model.sql_macros``), which handle every AnyValue. Both give byte-identical text:
DuckDB's ``to_json`` escapes only ``"``, ``\\`` and control characters, which is exactly what is excluded
here, and a canonical integer is its own ``CAST(HUGEINT AS VARCHAR)``.
"""
from __future__ import annotations

import numpy as np

from .spans import PROMOTED, PROMOTED_COLUMNS

# Characters that would need escaping in a JSON string (DuckDB's to_json escapes exactly these).
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
_KEYS = list(PROMOTED)
# per promoted column, the positions in _KEYS of its candidate keys
_CODES = {col: [i for i, k in enumerate(_KEYS) if PROMOTED[k][0] == col] for col in PROMOTED_COLUMNS}


def _any(mask) -> bool:
    import pyarrow.compute as pc

    return bool(pc.any(mask).as_py())


def any_match(strings, char_class: str) -> bool:
    """Whether any string holds a character of ``char_class``: one regex scan over all of them joined,
    instead of one regex call per string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    strings = pc.drop_null(strings)
    if not len(strings):
        return False
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(strings)], pa.int32()), strings), "")
    return bool(pc.match_substring_regex(joined, char_class)[0].as_py())


def canonical_ints(strings) -> bool:
    """Whether every string is an integer written as ``CAST(HUGEINT AS VARCHAR)`` writes it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        back = pc.cast(pc.cast(strings, pa.int64()), pa.string())
    except pa.ArrowInvalid:
        return False
    return bool(pc.all(pc.equal(back, strings)).as_py()) if len(strings) else True


def _values(attrs):
    """(keys, value text as json_extract_string gives it, value as JSON) for the flattened attribute list,
    or None when some value or key is outside the common case."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kv = attrs.flatten()
    if not len(kv):
        return kv.field("key"), pa.array([], pa.string()), pa.array([], pa.string())
    key = kv.field("key")
    val = kv.field("value")
    if key.null_count or val.null_count:
        return None
    for rare in ("doubleValue", "bytesValue", "arrayValue", "kvlistValue"):
        if val.field(rare).null_count != len(val):
            return None
    sv, iv, bv = val.field("stringValue"), val.field("intValue"), val.field("boolValue")
    if any_match(key, _NEEDS_ESCAPE) or any_match(sv, _NEEDS_ESCAPE):
        return None
    has_s = pc.is_valid(sv)
    use_i = pc.and_(pc.invert(has_s), pc.is_valid(iv))
    if not canonical_ints(iv.filter(use_i)):
        return None
    use_b = pc.and_(pc.and_(pc.invert(has_s), pc.invert(pc.is_valid(iv))), pc.is_valid(bv))
    if _any(pc.invert(pc.or_(pc.or_(has_s, use_i), use_b))):
        return None  # an empty AnyValue: DuckDB renders it as null
    btext = pc.if_else(bv, "true", "false")
    text = pc.if_else(has_s, sv, pc.if_else(use_i, iv, btext))
    quoted = pc.binary_join_element_wise('"', sv, '"', "")
    as_json = pc.if_else(has_s, quoted, pc.if_else(use_i, iv, btext))
    return key, text, as_json


def _join(attrs, pieces, empty: str | None):
    """Per list: '{' + pieces joined by ',' + '}' (``empty`` for an empty or missing list)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    offsets = attrs.offsets
    offsets = pc.subtract(offsets, offsets[0])
    lists = pa.ListArray.from_arrays(offsets, pieces)
    joined = pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")
    if empty != "{}":
        lengths = pc.list_value_length(lists)
        joined = pc.if_else(pc.equal(lengths, 0), pa.scalar(empty, pa.string()), joined)
    return joined


def _rendered(attrs, empty: str | None):
    """(attribute JSON per list, the flattened keys and value texts) or None (use the SQL path)."""
    import pyarrow.compute as pc

    got = _values(attrs)
    if got is None:
        return None
    key, text, as_json = got
    pieces = pc.binary_join_element_wise('"', key, '":', as_json, "")
    return _join(attrs, pieces, empty), key, text


def attributes_json(attrs, empty: str | None = "{}"):
    """The attribute JSON object per list, or None (use the SQL path)."""
    got = _rendered(attrs, empty)
    return None if got is None else got[0]


def attributes_and_promoted(attrs):
    """(attribute JSON per span, {promoted column: text per span}) or None (use the SQL path).
    A promoted column takes the value of its highest-priority key that is present and not empty, as the
    SQL path's ``coalesce(nullif(json_extract_string(...), ''), ...)`` does; where one span holds two
    candidate keys of a column, or one key twice, the SQL path decides (None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    got = _rendered(attrs, "{}")
    if got is None:
        return None
    out, key, text = got
    n = len(attrs)
    code = pc.fill_null(pc.index_in(key, value_set=pa.array(_KEYS)), -1).to_numpy()
    parent = pc.list_parent_indices(attrs).to_numpy()
    nonempty = pc.not_equal(text, "").to_numpy(zero_copy_only=False)
    text_null = pa.concat_arrays([text, pa.nulls(1, pa.string())])
    promoted = {}
    for col in PROMOTED_COLUMNS:
        sel = np.isin(code, _CODES[col])
        if np.bincount(parent[sel], minlength=n).max(initial=0) > 1:
            return None
        pick = sel & nonempty
        index = np.full(n, len(text), dtype=np.int64)
        index[parent[pick]] = np.flatnonzero(pick)
        promoted[col] = text_null.take(pa.array(index))
    return out, promoted
