"""Out-of-range values (issue 11): whatever a file or an exporter sends, a value that does not fit the store
is clamped or left out, counted as a problem with its place, and the good spans of the same batch load.
One validation layer (``SpanColumns.add``) serves file mode and the receiver; the Arrow and msgspec paths
give the same rows."""
import json

import orjson
import pytest

from triage.collectors import receiver
from triage.collectors.ingest import ingest_paths
from triage.collectors.store import EVENT_COLUMNS, SPAN_COLUMNS, Store
from triage.cli.main import main

TID = "5b8efff798038103d269b633813fc60c"
START, END = 1544712660000000000, 1544712661000000000


def span(i, **kw):
    return {"traceId": TID, "spanId": f"{i:016x}", "name": "s", "kind": 2,
            "startTimeUnixNano": str(START), "endTimeUnixNano": str(END), **kw}


def req(*spans):
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                               "scopeSpans": [{"spans": list(spans)}]}]}


def attr(key, value):
    return {"attributes": [{"key": key, "value": value}]}


def deep(n):
    v = {"intValue": "1"}
    for _ in range(n):
        v = {"arrayValue": {"values": [v]}}
    return v


BAD = {
    "kind300": (span(2, kind=300), "kind 300 out of range"),
    "status1000": (span(2, status={"code": 1000}), "status_code 1000 out of range"),
    "status_2**40": (span(2, status={"code": 2**40}), "status_code 1099511627776 out of range"),
    "http_status_2**40": (span(2, **attr("http.response.status_code", {"intValue": str(2**40)})),
                          "http_status value 1099511627776"),
    "resend_2**33": (span(2, **attr("http.request.resend_count", {"intValue": 2**33})), "resend_count value"),
    "end_2**63+5": (span(2, endTimeUnixNano=str(2**63 + 5)), "time out of range"),
    "start_2**70_number": (span(2, startTimeUnixNano=2**70, endTimeUnixNano=2**70 + 1), "time out of range"),
}
# only the Python readers render these (JSON lines keep big integers and deep values as DuckDB renders them)
BAD_DOC = {
    "intValue_2**64": (span(2, **attr("x", {"intValue": str(2**64)})), "integer beyond 64 bits"),
    "nested_300": (span(2, **attr("x", deep(300))), "nested deeper than"),
}


def _ingest(path):
    store = Store()
    return store, ingest_paths(store, [path])


@pytest.mark.parametrize("case, layout", [(c, "lines") for c in sorted(BAD)] +
                         [(c, "document") for c in sorted(BAD) + sorted(BAD_DOC)])
def test_out_of_range_values_in_files_load_the_good_spans(tmp_path, case, layout):
    bad, message = {**BAD, **BAD_DOC}[case]
    p = tmp_path / ("t.jsonl" if layout == "lines" else "t.json")
    doc = req(span(1), bad)
    p.write_text(json.dumps(doc) + "\n" if layout == "lines" else json.dumps(doc, indent=1))
    store, res = _ingest(p)
    expected = 1 if "time" in message else 2
    assert res.spans == expected == store.scalar("SELECT count(*) FROM spans")
    hits = [x for x in res.problems.items if message in x["message"]]
    assert hits, res.problems.items
    assert hits[0]["path"] == str(p) and ("line 1" in hits[0]["where"] or "spans[1]" in hits[0]["where"])
    rows = store.query("SELECT kind, status_code, http_status, resend_count FROM spans WHERE span_id = ?",
                       [f"{2:016x}"])
    for kind, code, http, resend in rows:
        assert 0 <= kind <= 5 and 0 <= code <= 2 and http is None and resend is None
    n = store.scalar("SELECT problems FROM inputs")
    assert n >= 1


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_report_does_not_crash_on_out_of_range_values(tmp_path, case, capsys):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(req(span(1), BAD[case][0])) + "\n")
    assert main(["report", str(p), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["inputs"]["problems"]


def _jaeger(start):
    return {"data": [{"traceID": TID, "processes": {"p1": {"serviceName": "a"}}, "spans": [
        {"traceID": TID, "spanID": "eee19b7ec3c1b174", "operationName": "x", "processID": "p1",
         "startTime": start, "duration": 5},
        {"traceID": TID, "spanID": "eee19b7ec3c1b175", "operationName": "x", "processID": "p1",
         "startTime": 1544712660000000, "duration": 5}]}]}


def _zipkin(start):
    return [{"traceId": TID, "id": "eee19b7ec3c1b174", "name": "x", "timestamp": start, "duration": 3,
             "localEndpoint": {"serviceName": "a"}},
            {"traceId": TID, "id": "eee19b7ec3c1b175", "name": "x", "timestamp": 1544712660000000, "duration": 3,
             "localEndpoint": {"serviceName": "a"}}]


@pytest.mark.parametrize("fmt", [_jaeger, _zipkin])
def test_jaeger_and_zipkin_start_1e25(tmp_path, fmt, capsys):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(fmt(1e25)))
    store, res = _ingest(p)
    assert res.spans == 1
    assert any("eee19b7ec3c1b174" in x["message"] and "out of range" in x["message"] for x in res.problems.items)
    assert main(["report", str(p), "--format", "json"]) == 0  # was a traceback and exit 1
    assert json.loads(capsys.readouterr().out)["inputs"]["spans"] == 1


@pytest.mark.parametrize("case", sorted(BAD_DOC))
def test_cli_report_on_documents(tmp_path, case, capsys):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(req(span(1), BAD_DOC[case][0]), indent=1))
    assert main(["report", str(p), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["problems"]["count"] >= 1


def _proto(**fields):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    r = ExportTraceServiceRequest()
    ss = r.resource_spans.add().scope_spans.add()
    for i, f in enumerate([{}, fields], start=1):
        sp = ss.spans.add()
        sp.trace_id, sp.span_id, sp.name = bytes.fromhex(TID), i.to_bytes(8, "big"), "s"
        sp.start_time_unix_nano, sp.end_time_unix_nano = START, END
        for k, v in f.items():
            if k == "kind":
                sp.kind = v
            else:
                setattr(sp, k, v)
    return r.SerializeToString()


@pytest.mark.parametrize("fields, message", [({"end_time_unix_nano": 2**63 + 5}, "time out of range"),
                                             ({"kind": 2**31 - 1}, "kind 2147483647 out of range")])
def test_protobuf_out_of_range(tmp_path, fields, message):
    p = tmp_path / "t.pb"
    p.write_bytes(_proto(**fields))
    store, res = _ingest(p)
    assert any(message in x["message"] for x in res.problems.items), res.problems.items
    assert store.scalar("SELECT count(*) FROM spans WHERE span_id = ?", [f"{1:016x}"]) == 1


@pytest.mark.parametrize("body, ctype", [
    (lambda: _proto(end_time_unix_nano=2**63 + 5), "application/x-protobuf"),
    (lambda: _proto(kind=2**31 - 1), "application/x-protobuf"),
    *[(lambda b=b: json.dumps(req(span(1), b[0])).encode(), "application/json") for b in {**BAD, **BAD_DOC}.values()],
])
def test_receiver_payloads_fit_the_store(body, ctype):
    """The receiver parses with ``receiver.parse_payload``, which feeds the same SpanColumns.add: what it
    returns inserts without error, and the good span is among it."""
    cols = receiver.parse_payload(body(), ctype, "otlp-http")
    assert cols.problems.count >= 1
    store = Store()
    store.insert_columns("spans", SPAN_COLUMNS, cols.spans)
    store.insert_columns("span_events", EVENT_COLUMNS, cols.events)
    assert store.scalar("SELECT count(*) FROM spans WHERE span_id = ?", [f"{1:016x}"]) == 1


def test_arrow_and_msgspec_paths_agree_on_out_of_range_values(tmp_path):
    """A chunk big enough for Arrow, with out-of-range promoted numbers in it: the Arrow path hands it to
    the exact path, so rows and problems equal the msgspec path's."""
    from triage.collectors import otlp_lines_arrow, otlp_lines_exact

    lines = []
    for i in range(1, 3000):
        extra = attr("http.response.status_code", {"intValue": str(2**40 if i % 500 == 0 else 200)})
        lines.append(orjson.dumps(req(span(i, **extra))))
    chunk = b"\n".join(lines) + b"\n"
    a, b = Store(), Store()
    with a.writer() as con:
        try:
            got = otlp_lines_arrow.load_chunk(con, chunk, "x")
        except Exception:
            got = None
    assert got is None or a.scalar("SELECT count(*) FROM spans WHERE http_status IS NULL") == 5
    batch = otlp_lines_exact.decode_lines(chunk, "x", 1)
    otlp_lines_exact.write(b, batch)
    assert b.scalar("SELECT count(*) FROM spans") == 2999
    assert b.scalar("SELECT count(*) FROM spans WHERE http_status IS NULL") == 5
    assert batch.problems.count == 5
    assert {x["where"] for x in batch.problems.items} == {f"line {i}" for i in range(500, 3000, 500)}


def test_file_large_enough_for_arrow_reports_each_out_of_range_value(tmp_path):
    """A file past the small-file batch and big enough for Arrow: the chunks holding bad values go to the exact
    path; every bad value is one problem, every good span loads."""
    from triage.collectors.small_files import SMALL_FILE_BYTES

    def extra(i):
        if i % 500 == 0:
            return attr("http.response.status_code", {"intValue": str(2**40)})
        if i % 500 == 1:
            return {"kind": 300}
        if i % 500 == 2:
            return {"endTimeUnixNano": str(2**63 + 5)}
        return attr("http.response.status_code", {"intValue": "200"})

    lines = [orjson.dumps(req(span(i, **extra(i)))) for i in range(1, 9000)]
    p = tmp_path / "t.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    assert p.stat().st_size > SMALL_FILE_BYTES
    store, res = _ingest(p)
    n = {r: sum(1 for i in range(1, 9000) if i % 500 == r) for r in (0, 1, 2)}
    bad = [x["message"] for x in res.problems.items if "out of range" in x["message"]]
    assert len(bad) == sum(n.values()) and res.problems.count == len(bad)
    assert res.spans == 8999 - n[2] == store.scalar("SELECT count(*) FROM spans")
    assert store.scalar("SELECT count(*) FROM spans WHERE kind > 5") == 0
    assert store.scalar("SELECT count(*) FROM spans WHERE http_status IS NULL") == n[0] + n[1]
