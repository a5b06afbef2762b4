"""The real Triton + gateway capture: numbers checked against an independent reading of the raw files
(stdlib json for Triton's OTLP JSON, the generated protobuf classes for the gateway's bodies)."""
import json

import numpy as np
import pytest

from conftest import CAPTURE


@pytest.fixture(scope="module")
def raw():
    """Spans straight from the raw files, with no triage code involved."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for f in sorted((CAPTURE / "otlp").iterdir()):
        if f.suffix == ".json":
            doc = json.loads(f.read_text())
            for rs in doc["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        spans.append({"svc": "triton", "name": s["name"], "trace": s["traceId"], "id": s["spanId"],
                                      "parent": s.get("parentSpanId", ""), "start": int(s["startTimeUnixNano"]),
                                      "end": int(s["endTimeUnixNano"]),
                                      "events": {e["name"]: int(e["timeUnixNano"]) for e in s.get("events", [])}})
        else:
            req = ExportTraceServiceRequest()
            req.ParseFromString(f.read_bytes())
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        spans.append({"svc": "gateway", "name": s.name, "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                      "parent": s.parent_span_id.hex(), "start": s.start_time_unix_nano,
                                      "end": s.end_time_unix_nano, "kind": s.kind, "events": {}})
    return spans


def test_every_span_is_loaded(capture, raw):
    rep = capture.report()
    assert rep["inputs"]["spans"] == len(raw) == 13643
    by_svc = dict(capture.store.query("SELECT service, count(*) FROM spans GROUP BY 1"))
    assert by_svc == {"gateway": sum(s["svc"] == "gateway" for s in raw), "triton": sum(s["svc"] == "triton" for s in raw)}
    assert rep["inputs"]["traces"] == len({s["trace"] for s in raw})
    assert rep["inputs"]["samples"] == sum(1 for line in (CAPTURE / "metrics.prom").read_text().splitlines()
                                           if line and not line.startswith("#"))
    assert rep["inputs"]["skipped"] == []
    assert capture.store.scalar("SELECT format FROM inputs WHERE path LIKE '%config.pbtxt'") == "triton-config"


def test_every_triton_request_joins_its_gateway_trace(capture, raw):
    client_ids = {(s["trace"], s["id"]) for s in raw if s["svc"] == "gateway" and s["kind"] == 3}
    infer = [(s["trace"], s["parent"]) for s in raw if s["name"] == "InferRequest"]
    assert len(infer) == 1949 and set(infer) <= client_ids
    # In triage, each of them is one request of the gateway route (no orphan Triton-only requests).
    routes = dict(capture.store.query("SELECT route, count(*) FROM requests GROUP BY 1"))
    assert routes == {"gateway POST /v1/classify": 1949}
    joined = capture.store.scalar("""
        SELECT count(*) FROM span_times t JOIN spans s USING (trace_id, span_id)
        JOIN requests q ON q.trace_id = t.trace_id AND q.root_id = t.root_id
        WHERE s.name = 'InferRequest' AND q.service = 'gateway'""")
    assert joined == 1949


def test_gateway_p95_matches_independent_computation(capture, raw):
    roots = np.array([(s["end"] - s["start"]) / 1e6 for s in raw if s["name"] == "POST /v1/classify"])
    expected = float(np.percentile(roots, 95))
    got = capture.report()["latency"]["gateway POST /v1/classify"]["p95_ms"]
    assert got == pytest.approx(expected, rel=0.01)
    assert got == pytest.approx(47.49, abs=0.01)  # the figure the capture's README states


def test_queue_time_comes_from_triton_events(capture, raw):
    """Queue = QUEUE_START of the model span → COMPUTE_START of its compute child, per request."""
    by_parent = {(s["trace"], s["parent"]): s for s in raw if s["name"] == "compute"}
    expected = {}
    for s in raw:
        if "QUEUE_START" in s["events"]:
            comp = by_parent[(s["trace"], s["id"])]
            expected[s["trace"]] = max(comp["events"]["COMPUTE_START"] - s["events"]["QUEUE_START"], 0)
    got = dict(capture.store.query("SELECT trace_id, ns FROM request_stages WHERE stage = 'queue'"))
    assert len(expected) == 1949 and set(got) == set(expected)
    assert all(got[t] == expected[t] for t in expected)
    q95 = float(np.percentile(list(expected.values()), 95)) / 1e6
    stage = capture.report()["stages"]["gateway POST /v1/classify"]["queue"]
    assert stage["p95_ms"] == pytest.approx(q95, rel=1e-3)


def test_stage_times_match_span_arithmetic(capture, raw):
    """tokenize → preprocess, Triton compute → inference, with the README's p95 figures."""
    tok = np.array([(s["end"] - s["start"]) for s in raw if s["name"] == "tokenize"]) / 1e6
    comp = np.array([(s["end"] - s["start"]) for s in raw if s["name"] == "compute"]) / 1e6
    st = capture.report()["stages"]["gateway POST /v1/classify"]
    assert st["preprocess"]["p95_ms"] == pytest.approx(float(np.percentile(tok, 95)), rel=1e-3)
    assert st["inference"]["p95_ms"] == pytest.approx(float(np.percentile(comp, 95)), rel=1e-3)
    # Exclusive times of a request add up to its end-to-end time, exactly (children nest in parents here).
    off = capture.store.query("""
        SELECT count(*), max(abs(q.duration_ns - s.total)) FROM requests q
        JOIN (SELECT trace_id, root_id, sum(ns) AS total FROM request_stages GROUP BY ALL) s USING (trace_id, root_id)""")
    assert off == [(1949, 0)]


def test_rules_on_the_real_capture(capture):
    """No preprocessing problem (12%), no GPU metrics (CPU run), queue flat at the 10 ms batch window while the
    rate rose 5x (not growth), no retries. What is wrong is the batching window: it alone fires."""
    f = {x["rule"]: x for x in capture.report()["findings"]}
    assert [x["rule"] for x in capture.report()["findings"] if x["severity"] != "info"] == ["batching-window"]
    assert f["gpu-underutilized"]["summary"].startswith("Not evaluated")
    assert capture.report()["stages"]["gateway POST /v1/classify"]["preprocess"]["p95_share"] == pytest.approx(0.12, abs=0.01)
