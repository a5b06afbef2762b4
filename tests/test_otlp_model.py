"""One OTLP model: an AnyValue is stored as the same JSON text whichever path reads it, and a span gives the
same rows over protobuf and over JSON.

The paths: the Python rendering (``otlp_model.json_any_value`` / ``proto_any_value``, written by
``SpanColumns``) used by the tolerant document reader, the protobuf readers and the receiver; the SQL rendering
(``otlp_model.sql_macros``) used by the exact lines path over DuckDB JSON and by the Arrow path over its
structs; and the Arrow path's kernels for the common case (``arrow_attrs``).
"""
from __future__ import annotations

import base64

import duckdb
import orjson
import pytest

from triage.collectors import arrow_attrs, otlp_lines_arrow, otlp_lines_exact
from triage.collectors.ingest import ingest_paths
from triage.collectors.otlp_document import parse_request as parse_json_request
from triage.collectors.otlp_model import KV_JSON, has_nested_containers, json_any_value, sql_macros
from triage.collectors.otlp_proto import parse_request as parse_proto_request
from triage.collectors.spans import SpanColumns
from triage.collectors.store import EVENT_COLUMNS, SPAN_COLUMNS, Store

STRINGS = ["", "plain", "héllo wörld", "中文 😀 \U0010ffff", '"quoted" \\ back\\slash', "tab\t nl\n cr\r bs\b ff\f",
           "\x00 \x01 \x1f \x7f", "\u2028\u2029", "</script>", "a" * 300, "the text \\u000B, \\u00 and \\\\u001F",
           "esc \x1b[0m and the text \\u001b\"", "\x0b\x0e\x0f\x1a\t\x08\x0c\r\n"]
INTS = ["0", "1", "-1", "42", "9223372036854775807", "-9223372036854775808", "-9223372036854775807", 7]
DOUBLES = [0.0, -0.0, 0.1, 1.0, -2.5, 1.5, 123456789.123, 1e-7, 1.5e-5, 3.0000000000000004e-5, 3e-4, 0.001,
           1e15, 1e16, 1.5e17, 1e20, 1e300, 5e-324, 1.7976931348623157e308, 2.0 ** 63, 0.1 + 0.2, -1e-5,
           "NaN", "Infinity", "-Infinity"]
BYTES = [b"", b"\x00\x01\x02\xff", b"hello", bytes(range(256))]


def _values() -> dict[str, dict]:
    """A wide set of OTLP JSON AnyValues, by name."""
    out: dict[str, dict] = {}
    for i, s in enumerate(STRINGS):
        out[f"string{i}"] = {"stringValue": s}
    for i, v in enumerate(INTS):
        out[f"int{i}"] = {"intValue": v}
    for i, v in enumerate(DOUBLES):
        out[f"double{i}"] = {"doubleValue": v}
    out["true"], out["false"] = {"boolValue": True}, {"boolValue": False}
    for i, b in enumerate(BYTES):
        out[f"bytes{i}"] = {"bytesValue": base64.b64encode(b).decode()}
    scalars = [{"stringValue": "x\"y"}, {"intValue": "-3"}, {"doubleValue": 2.5}, {"doubleValue": 1e-7},
               {"boolValue": False}, {"bytesValue": "AAEC"}, {}]
    out["array"] = {"arrayValue": {"values": scalars}}
    out["array_empty"] = {"arrayValue": {"values": []}}
    out["array_no_values"] = {"arrayValue": {}}
    out["kvlist"] = {"kvlistValue": {"values": [{"key": f"k{i}\u00e9\"", "value": v} for i, v in enumerate(scalars)]}}
    out["kvlist_empty"] = {"kvlistValue": {"values": []}}
    out["kvlist_no_values"] = {"kvlistValue": {}}
    out["nested_array"] = {"arrayValue": {"values": [{"arrayValue": {"values": [{"intValue": "1"}]}},
                                                     {"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": True}}]}}]}}
    out["nested_kvlist"] = {"kvlistValue": {"values": [
        {"key": "inner", "value": {"kvlistValue": {"values": [{"key": "deep", "value": {"arrayValue": {"values": [
            {"doubleValue": 0.5}, {"stringValue": "ü"}]}}}]}}}]}}
    out["empty"] = {}
    return out


VALUES = _values()


def _proto_value(v: dict, out) -> None:
    """The same AnyValue as a protobuf message (``out``)."""
    if "stringValue" in v:
        out.string_value = v["stringValue"]
    elif "intValue" in v:
        out.int_value = int(v["intValue"])
    elif "doubleValue" in v:
        out.double_value = float(v["doubleValue"])
    elif "boolValue" in v:
        out.bool_value = v["boolValue"]
    elif "bytesValue" in v:
        out.bytes_value = base64.b64decode(v["bytesValue"])
    elif "arrayValue" in v:
        out.array_value.SetInParent()
        for x in v["arrayValue"].get("values", []):
            _proto_value(x, out.array_value.values.add())
    elif "kvlistValue" in v:
        out.kvlist_value.SetInParent()
        for kv in v["kvlistValue"].get("values", []):
            item = out.kvlist_value.values.add()
            item.key = kv["key"]
            _proto_value(kv["value"], item.value)


TRACE, SPAN, PARENT = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"


def _json_request(attrs: list, resource: list | None = None) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": resource or [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": TRACE, "spanId": SPAN, "parentSpanId": PARENT, "name": "op", "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
            "attributes": attrs, "status": {"code": 2, "message": "boom"},
            "events": [{"timeUnixNano": "1700000000100000000", "name": "ev", "attributes": attrs}]}]}]}]}


def _proto_request(attrs: list, resource: list | None = None):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for kv in resource or [{"key": "service.name", "value": {"stringValue": "svc"}}]:
        item = rs.resource.attributes.add()
        item.key = kv["key"]
        _proto_value(kv["value"], item.value)
    sp = rs.scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.parent_span_id = bytes.fromhex(TRACE), bytes.fromhex(SPAN), bytes.fromhex(PARENT)
    sp.name, sp.kind = "op", 2
    sp.start_time_unix_nano, sp.end_time_unix_nano = 1700000000000000000, 1700000000500000000
    sp.status.code, sp.status.message = 2, "boom"
    ev = sp.events.add()
    ev.time_unix_nano, ev.name = 1700000000100000000, "ev"
    for target in (sp.attributes, ev.attributes):
        for kv in attrs:
            item = target.add()
            item.key = kv["key"]
            _proto_value(kv["value"], item.value)
    return req


def _stored(cols: SpanColumns) -> tuple[str, str]:
    """(span attributes, event attributes) as stored from Python-filled columns."""
    assert cols.problems.count == 0, cols.problems.items
    return cols.spans["attributes"][0], cols.events["attributes"][0]


def _rows(store: Store) -> tuple[list, list]:
    return (store.query("SELECT * EXCLUDE (source) FROM spans ORDER BY ALL"),
            store.query("SELECT * FROM span_events ORDER BY ALL"))


def _exact(line: bytes) -> tuple[str, str]:
    store = Store()
    batch = otlp_lines_exact.decode_lines(line, "x", 1)
    otlp_lines_exact.write(store, batch)
    assert batch.problems.count == 0, batch.problems.items
    return store.query("SELECT attributes FROM spans")[0][0], store.query("SELECT attributes FROM span_events")[0][0]


def _arrow(line: bytes) -> tuple[str, str] | None:
    store = Store()
    with store.writer() as con:
        if otlp_lines_arrow.load_chunk(con, line, "x") is None:
            return None
    return store.query("SELECT attributes FROM spans")[0][0], store.query("SELECT attributes FROM span_events")[0][0]


# Values the Arrow path refuses (the whole chunk then goes to the exact path): not JSON numbers, NaN,
# an integer written as a number, containers inside containers.
ARROW_REFUSES = {"double22", "double23", "double24", "int7", "nested_array", "nested_kvlist"}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_path_stores_an_anyvalue_as_the_same_text(name, monkeypatch):
    value = VALUES[name]
    attrs = [{"key": "v", "value": value}, {"key": "k\"é\n", "value": value}]
    doc = _json_request(attrs)
    line = orjson.dumps(doc)

    document = SpanColumns("x")
    parse_json_request(doc, document, "")
    want = _stored(document)
    assert want[0] == orjson.dumps({"v": json_any_value(value), "k\"é\n": json_any_value(value)}).decode()

    proto = SpanColumns("x")
    parse_proto_request(_proto_request(attrs), proto, "")
    assert _stored(proto) == want, "protobuf"

    assert _exact(line) == want, "exact lines path (SQL macros over JSON)"

    arrow = _arrow(line)
    assert (arrow is None) == (name in ARROW_REFUSES)
    if arrow is not None:
        assert arrow == want, "Arrow path"
        monkeypatch.setattr(arrow_attrs, "attributes_and_promoted", lambda attrs: None)
        monkeypatch.setattr(arrow_attrs, "attributes_json", lambda attrs, empty=None: None)
        assert _arrow(line) == want, "Arrow path, SQL macros over structs"


def test_sql_macros_render_each_anyvalue_as_python_does():
    """The macros themselves, value by value (one level of containers: deeper ones are read by Python)."""
    con = duckdb.connect()
    con.execute(sql_macros())
    for name, value in VALUES.items():
        attrs = orjson.dumps([{"key": "k\x1f\\u001F", "value": value}])
        if has_nested_containers(attrs):
            assert name.startswith("nested")
            continue
        got = con.execute(f"SELECT otlp_attrs_json(from_json(?, '{KV_JSON}'))", [attrs.decode()]).fetchone()[0]
        assert got == orjson.dumps({"k\x1f\\u001F": json_any_value(value)}).decode(), name


def test_nested_containers_are_found():
    assert has_nested_containers(orjson.dumps([{"key": "a", "value": VALUES["nested_array"]}]))
    assert has_nested_containers(orjson.dumps([{"attributes": [{"key": "a", "value": VALUES["nested_kvlist"]}]}]))
    assert not has_nested_containers(orjson.dumps([{"key": "a", "value": VALUES["array"]},
                                                   {"key": "b", "value": VALUES["kvlist"]}]))
    assert not has_nested_containers(b'[{"key": "a", "value": {"stringValue": "arrayValue"}}]')


def test_the_same_span_over_protobuf_and_json_stores_identical_rows(tmp_path):
    """Ids as hex, bytes as base64, enums, times, resource, events: the same rows from a protobuf body, an
    OTLP JSON document and OTLP JSON lines."""
    attrs = [{"key": k, "value": v} for k, v in VALUES.items()]
    resource = [{"key": "service.name", "value": {"stringValue": "svc"}},
                {"key": "host.id", "value": {"bytesValue": "AAEC/w=="}},
                {"key": "list", "value": VALUES["array"]}]
    pb = tmp_path / "pb" / "trace.pb"
    pb.parent.mkdir()
    pb.write_bytes(_proto_request(attrs, resource).SerializeToString())
    doc = tmp_path / "doc" / "trace.json"
    doc.parent.mkdir()
    doc.write_bytes(orjson.dumps(_json_request(attrs, resource), option=orjson.OPT_INDENT_2))
    lines = tmp_path / "lines" / "trace.jsonl"
    lines.parent.mkdir()
    lines.write_bytes(orjson.dumps(_json_request(attrs, resource)) + b"\n")

    got = {}
    for path in (pb, doc, lines):
        store = Store()
        res = ingest_paths(store, [path])
        assert res.spans == 1, res.problems.items
        assert [p["message"] for p in res.problems.items] == ["1 orphan span(s): parent not in the capture"]
        got[path.suffix] = _rows(store)
        assert store.query("SELECT format FROM inputs") == [
            ({".pb": "otlp-proto", ".json": "otlp-json", ".jsonl": "otlp-json"}[path.suffix],)]
    assert got[".pb"] == got[".json"] == got[".jsonl"]
    span = dict(zip(SPAN_COLUMNS, got[".pb"][0][0]))
    assert (span["trace_id"], span["span_id"], span["parent_span_id"]) == (TRACE, SPAN, PARENT)
    assert orjson.loads(span["attributes"])["bytes1"] == "AAEC/w=="
    assert orjson.loads(span["resource"])["host.id"] == "AAEC/w=="
    assert len(got[".pb"][1]) == 1 and dict(zip(EVENT_COLUMNS, got[".pb"][1][0]))["name"] == "ev"
