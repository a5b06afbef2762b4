"""The OTLP trace model, written once for every OTLP path (JSON document, JSON lines exact and Arrow,
protobuf, the live receiver): span kind and status code enums, and how an AnyValue is stored.

An AnyValue is stored as JSON text: strings quoted, integers and finite doubles bare (NaN and infinities as
``null``), booleans, bytes as their base64 text (OTLP/JSON's own mapping, so a span gives the same row over
protobuf and over JSON), arrays and key/value lists as JSON arrays and objects. Python readers turn an AnyValue
into a Python value here (``json_any_value`` for decoded OTLP JSON, ``proto_any_value`` for a protobuf
message) and ``spans.SpanColumns`` writes it with orjson. The SQL paths render it with the DuckDB macros of
``sql_macros`` (OTLP JSON typed as DuckDB JSON, or the Arrow path's structs): the same text, byte for byte
(``tests/test_otlp_model.py`` renders a wide set of values both ways). The macros render one level of
containers; the paths that use them hand a span with a container inside a container to the Python reader
(``has_nested_containers``).

Span and trace ids are stored as lowercase hex whatever the wire format (``spans.normalize_id``: raw bytes
from protobuf, hex or base64 text from JSON).
"""
from __future__ import annotations

import base64
from typing import NamedTuple

import orjson

from .spans import _as_int

SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
              "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def enum_value(value, names: dict) -> int:
    """An enum of OTLP JSON (a number or its name) as its number; 0 when it is neither."""
    if isinstance(value, str):
        if value in names:
            return names[value]
        try:
            return int(value)
        except ValueError:
            return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        iv = _as_int(value)  # NaN and infinities are not enums; the range is checked in SpanColumns.add
        return 0 if iv is None else iv
    return 0


# -- AnyValue in Python -----------------------------------------------------------------------------------

def bytes_text(data: bytes) -> str:
    """A bytes AnyValue as stored: base64, as OTLP/JSON writes it."""
    return base64.b64encode(data).decode("ascii")


def json_any_value(v):
    """An OTLP JSON AnyValue (decoded) → the Python value stored for it."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return v["intValue"]
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return v["doubleValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [json_any_value(x) for x in ((v["arrayValue"] or {}).get("values") or [])]
    if "kvlistValue" in v:
        return json_attributes((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def json_attributes(kvs) -> dict:
    """An OTLP JSON attribute list (decoded) → {key: value}."""
    out = {}
    if not isinstance(kvs, list):
        return out
    for kv in kvs:
        if isinstance(kv, dict) and "key" in kv:
            v = kv.get("value")
            if isinstance(v, dict) and "stringValue" in v:  # the common case, inline
                out[str(kv["key"])] = v["stringValue"]
            else:
                out[str(kv["key"])] = json_any_value(v)
    return out


def proto_any_value(v):
    """A protobuf AnyValue → the Python value stored for it (the same as its OTLP JSON form gives)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [proto_any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return proto_attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return bytes_text(v.bytes_value)
    return getattr(v, which)


def proto_attributes(kvs) -> dict:
    """A protobuf attribute list → {key: value}."""
    return {kv.key: proto_any_value(kv.value) for kv in kvs}


def has_nested_containers(raw: bytes) -> bool:
    """Whether raw OTLP JSON (an attribute list, or a list of events) holds an array or key/value list inside
    another one: the SQL macros render one level, such a span is read by the Python reader."""
    if b"arrayValue" not in raw and b"kvlistValue" not in raw:
        return False
    try:
        return _nested(orjson.loads(raw), False)
    except (orjson.JSONDecodeError, RecursionError):
        return True


def _nested(x, inside: bool) -> bool:
    if isinstance(x, dict):
        here = "arrayValue" in x or "kvlistValue" in x
        if here and inside:
            return True
        return any(_nested(v, inside or here) for v in x.values())
    if isinstance(x, list):
        return any(_nested(v, inside) for v in x)
    return False


# -- AnyValue in SQL --------------------------------------------------------------------------------------

class _Fields(NamedTuple):
    """SQL for each field of an AnyValue ``v``: text for strings, integers (as written), booleans and bytes,
    DOUBLE for doubles; the containers and their element lists."""

    string: str
    int: str
    double: str
    bool: str
    bytes: str
    array: str
    array_values: str
    kvlist: str
    kvlist_values: str


KV_JSON = '[{"key": "VARCHAR", "value": "JSON"}]'  # from_json's structure of an attribute list

_JSON = _Fields(  # v: an AnyValue as DuckDB JSON (the exact lines path)
    string="(v->>'stringValue')", int="(v->>'intValue')", double="TRY_CAST((v->>'doubleValue') AS DOUBLE)",
    bool="(v->>'boolValue')",
    bytes="(v->>'bytesValue')",
    array="(v->'arrayValue')", array_values="CAST(v->'arrayValue'->'values' AS JSON[])",
    kvlist="(v->'kvlistValue')", kvlist_values=f"from_json(v->'kvlistValue'->'values', '{KV_JSON}')")
_ARROW = _Fields(  # v: an AnyValue as the Arrow path's struct (``otlp_lines_arrow.schema``)
    string="v.stringValue", int="v.intValue", double="v.doubleValue", bool="CAST(v.boolValue AS VARCHAR)",
    bytes="v.bytesValue", array="v.arrayValue", array_values='v.arrayValue."values"',
    kvlist="v.kvlistValue", kvlist_values='v.kvlistValue."values"')

# A double as orjson writes it: DuckDB writes two exponent digits (1e-07) and uses an exponent from 1e-5 on,
# where orjson writes 1e-7 and 0.00001. (A macro's argument is copied wherever the body names it, so the body
# names it once, binding it to a lambda's parameter: the statements stay small to plan.)
_DOUBLE_MACRO = r"""
CREATE OR REPLACE TEMP MACRO otlp_double_json(d) AS list_transform([CAST(d AS VARCHAR)], lambda t: CASE
    WHEN t LIKE '%e-05' THEN (CASE WHEN t[1] = '-' THEN '-0.0000' ELSE '0.0000' END)
         || replace(ltrim(split_part(t, 'e', 1), '-'), '.', '')
    ELSE regexp_replace(t, 'e([+-])0(\d)$', 'e\1\2') END)[1];
"""


# JSON text as orjson writes it: DuckDB's to_json escapes the same characters as orjson, but writes the hex of
# the control characters 0x0b, 0x0e, 0x0f and 0x1a to 0x1f in uppercase (\u001F, orjson: \u001f). The rendered
# attribute object is corrected once, as a whole: every backslash pair (an escaped backslash) is set aside as
# a NUL (JSON text holds none raw), so that only real escapes are lowercased. Most texts hold no \u00 at all.
_UPPER_ESCAPES = [0x0B, 0x0E, 0x0F] + list(range(0x1A, 0x20))


def _lowercase_escapes_sql(j: str) -> str:
    out = f"replace({j}, '\\\\', chr(0))"
    for c in _UPPER_ESCAPES:
        out = f"replace({out}, '\\u{c:04X}', '\\u{c:04x}')"
    return f"replace({out}, chr(0), '\\\\')"


_ESCAPES_MACRO = f"""
CREATE OR REPLACE TEMP MACRO otlp_orjson_escapes(j) AS list_transform([j], lambda t: CASE
    WHEN contains(t, '\\u00') THEN {_lowercase_escapes_sql('t')} ELSE t END)[1];
"""


def _scalars(f: _Fields) -> str:
    return f"""
    WHEN {f.string} IS NOT NULL THEN to_json({f.string})
    WHEN TRY_CAST({f.int} AS HUGEINT) IS NOT NULL THEN CAST(TRY_CAST({f.int} AS HUGEINT) AS VARCHAR)
    WHEN isfinite({f.double}) THEN otlp_double_json({f.double})
    WHEN {f.bool} IN ('true', 'false') THEN {f.bool}"""


def _macros(prefix: str, f: _Fields) -> str:
    """``{prefix}_scalar_json(v)`` (an element of a container), ``{prefix}_value_json(v)`` (an AnyValue) and
    ``{prefix}_attrs_json(l)`` (a list of key/value structs: the JSON object, as orjson writes it; keys that are
    null are left out). The first two are parts of the third: their escapes are not yet orjson's."""
    scalar = f"{prefix}_scalar_json"
    bytes_when = f"\n    WHEN {f.bytes} IS NOT NULL THEN to_json({f.bytes})"
    return f"""
CREATE OR REPLACE TEMP MACRO {scalar}(v) AS (CASE{_scalars(f)}{bytes_when}
    ELSE 'null' END);
CREATE OR REPLACE TEMP MACRO {prefix}_value_json(v) AS (CASE{_scalars(f)}
    WHEN {f.array} IS NOT NULL THEN
        '[' || coalesce(array_to_string(list_transform({f.array_values}, lambda x: {scalar}(x)), ','), '') || ']'
    WHEN {f.kvlist} IS NOT NULL THEN
        '{{' || coalesce(array_to_string(list_transform({f.kvlist_values},
                                lambda x: to_json(x.key) || ':' || {scalar}(x.value)), ','), '') || '}}'{bytes_when}
    ELSE 'null' END);
CREATE OR REPLACE TEMP MACRO {prefix}_attrs_json(l) AS otlp_orjson_escapes(
    '{{' || coalesce(array_to_string(list_transform(list_filter(l, lambda x: x.key IS NOT NULL),
                                  lambda x: to_json(x.key) || ':' || {prefix}_value_json(x.value)), ','), '') || '}}');
"""


def sql_macros(arrow: bool = False) -> str:
    """The statements that create the macros (temporary, per connection): ``otlp_*`` over DuckDB JSON, or,
    with ``arrow``, ``arrow_*`` over the Arrow path's structs."""
    return _DOUBLE_MACRO + _ESCAPES_MACRO + (_macros("arrow", _ARROW) if arrow else _macros("otlp", _JSON))
