"""Reader edge cases with small hand-made snippets."""

import orjson

from triage.collectors.ingest import IngestResult, ingest_file, ingest_paths
from triage.collectors.store import Store
from conftest import SHARED

SPAN = {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174", "name": "tokenize",
        "kind": 1, "startTimeUnixNano": 1544712660000000000, "endTimeUnixNano": "1544712661000000000",
        "attributes": [{"key": "app.input_tokens", "value": {"intValue": "64"}}], "status": {}}


def _req(spans, legacy=False, service="svc"):
    key = "instrumentationLibrarySpans" if legacy else "scopeSpans"
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                               key: [{"spans": spans}]}]}


def _ingest(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    store = Store()
    res = ingest_paths(store, [p])
    return store, res


def test_hex_ids_case_insensitive_and_nanos_as_numbers(tmp_path):
    store, res = _ingest(tmp_path, "a.json", orjson.dumps(_req([SPAN])))
    assert res.spans == 1
    row = store.query("SELECT trace_id, span_id, duration_ns, input_size, service FROM spans")[0]
    assert row == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", 1_000_000_000, 64, "svc")


def test_legacy_name_and_result_wrapper(tmp_path):
    store, res = _ingest(tmp_path, "legacy.json", orjson.dumps({"result": _req([SPAN], legacy=True)}))
    assert res.spans == 1 and res.problems.count == 0


def test_json_lines_with_one_bad_line(tmp_path):
    good = orjson.dumps(_req([SPAN]))
    other = dict(SPAN, spanId="00f067aa0ba902b7")
    data = good + b"\n{not json\n" + orjson.dumps(_req([other])) + b"\n"
    store, res = _ingest(tmp_path, "lines.jsonl", data)
    assert res.spans == 2
    assert res.problems.count == 1 and res.problems.items[0]["where"] == "line 2"


def test_invalid_ids_and_end_before_start_are_reported_not_fatal(tmp_path):
    bad_id = dict(SPAN, spanId="xyz")
    backwards = dict(SPAN, spanId="00f067aa0ba902b8", endTimeUnixNano="1544712650000000000")
    store, res = _ingest(tmp_path, "bad.json", orjson.dumps(_req([SPAN, bad_id, backwards])))
    assert res.spans == 2
    msgs = [p["message"] for p in res.problems.items]
    assert any("invalid spanId" in m for m in msgs) and any("end before start" in m for m in msgs)
    assert all("spans[" in p["where"] for p in res.problems.items)


def test_prometheus_text_with_and_without_timestamps(tmp_path):
    text = ('# HELP x help\n# TYPE x counter\nx{a="1",b="q\\"uote",} 3 1700000000000\n'
            'vllm:num_requests_waiting{model_name="m"} 2\nbroken line here\n')
    store, res = _ingest(tmp_path, "m.prom", text.encode())
    rows = store.query("SELECT metric, labels, value, ts_ms FROM samples ORDER BY metric")
    assert rows[0][0] == "vllm:num_requests_waiting" and rows[0][2] == 2.0
    assert rows[1] == ("x", {"a": "1", "b": 'q"uote'}, 3.0, 1700000000000)
    assert res.problems.count == 1 and res.problems.items[0]["where"] == "line 5"


def test_openmetrics_timestamps_are_seconds(tmp_path):
    store, _ = _ingest(tmp_path, "om.txt.prom", b"# TYPE x gauge\nx 1 1700000000.5\n# EOF\n")
    assert store.scalar("SELECT ts_ms FROM samples") == 1700000000500


def test_unknown_and_empty_files_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    store = Store()
    res = ingest_paths(store, [tmp_path])
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in res.skipped}
    assert reasons == {"empty.json": "empty file", "garbage.bin": "unknown format"}


def test_shared_otlp_json_fixtures_counted_independently(tmp_path):
    import json

    folder = SHARED / "traces"
    for name in ("otlp_proto_example_trace.json", "otlp2jaeger-in.otlp.json", "otlp_jaeger_api_v3_anyvalues.json"):
        doc = json.loads((folder / name).read_text())
        doc = doc.get("result", doc)
        expected = sum(len(ss.get("spans", [])) for rs in doc["resourceSpans"]
                       for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", [])))
        store = Store()
        res = IngestResult()
        ingest_file(store, folder / name, res)
        assert res.spans == expected > 0, name
        assert res.problems.count == 0, res.problems.items


def test_anyvalue_types_decoded():
    from triage.collectors.otlp_model import json_any_value

    assert json_any_value({"arrayValue": {"values": [{"intValue": "1"}, {"boolValue": True}]}}) == [1, True]
    assert json_any_value({"kvlistValue": {"values": [{"key": "k", "value": {"doubleValue": 1.5}}]}}) == {"k": 1.5}
