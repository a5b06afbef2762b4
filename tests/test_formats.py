"""Every supported format, detected by content, with counts checked against an independent reading."""
import base64
import gzip
import json
import re
import struct

import pytest
import zstandard

from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store
from conftest import CAPTURE, SHARED

TRACES = SHARED / "traces"
METRICS = SHARED / "metrics"


def ingest(*paths):
    store = Store()
    return store, ingest_paths(store, list(paths))


def fmt_of(store, path):
    return store.scalar("SELECT format FROM inputs WHERE path = ?", [str(path)])


# -- traces -------------------------------------------------------------------------------------

def _otlp_count(doc):
    doc = doc.get("result", doc)
    return sum(len(ss.get("spans", [])) for rs in doc["resourceSpans"]
               for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", [])))


@pytest.mark.parametrize("name", ["otlp_proto_example_trace.json", "otlp2jaeger-in.otlp.json",
                                  "otlp_jaeger_api_v3_anyvalues.json"])
def test_otlp_json_fixtures(name):
    path = TRACES / name
    store, res = ingest(path)
    assert res.spans == _otlp_count(json.loads(path.read_text())) > 0
    assert fmt_of(store, path) == "otlp-json"
    assert [p for p in res.problems.items if p["path"] != "(capture)"] == []  # orphans are real in these


def test_jaeger_ui_download():
    path = TRACES / "jaeger_ui_genai_trace.json"
    doc = json.loads(path.read_text())
    store, res = ingest(path)
    assert fmt_of(store, path) == "jaeger-json"
    assert res.spans == len(doc["spans"]) == 57
    services = {p["serviceName"] for p in doc["processes"].values()}
    assert set(r[0] for r in store.query("SELECT DISTINCT service FROM spans")) == services
    # parent links come from CHILD_OF references
    refs = sum(1 for s in doc["spans"] if s["references"])
    assert store.scalar("SELECT count(*) FROM spans WHERE parent_span_id IS NOT NULL") == refs
    # typed tags survive: the root's http.route is promoted
    assert store.scalar("SELECT route FROM spans WHERE span_id = '0000000000000001'") == "/api/graphql"


def test_jaeger_api_and_otlp_of_the_same_trace_agree():
    """The Jaeger fixture is the Jaeger API rendering of the OTLP fixture: same ids, names, timings."""
    a, _ = ingest(TRACES / "otlp2jaeger-in.otlp.json")
    b, res = ingest(TRACES / "otlp2jaeger-out.jaeger_api.json")
    q = "SELECT trace_id, span_id, parent_span_id, name, start_ns // 1000, duration_ns // 1000 FROM spans ORDER BY span_id"
    assert res.spans > 0 and a.query(q) == b.query(q)


def test_zipkin_shared_spans_become_client_server_pairs():
    path = TRACES / "zipkin_v2_yelp_real.json"
    doc = json.loads(path.read_text())
    store, res = ingest(path)
    assert fmt_of(store, path) == "zipkin-json"
    assert res.spans == len(doc) == 16
    shared = [s for s in doc if s.get("shared")]
    assert len(shared) == 4
    clients = {s["id"] for s in doc if s.get("kind") == "CLIENT"}
    paired = [s for s in shared if s["kind"] == "SERVER" and s["id"] in clients]
    assert paired
    # every span is stored once, and each shared server span hangs under the client span with its id
    assert store.scalar("SELECT count(DISTINCT trace_id || span_id) FROM spans") == 16
    for s in paired:
        row = store.query("SELECT parent_span_id, kind FROM spans WHERE parent_span_id = ? AND kind = 2",
                          [s["id"].rjust(16, "0")])
        assert row, s["id"]


def test_zipkin_clock_skew_is_reported_and_clipped():
    path = TRACES / "zipkin_v2_clock_skew.json"
    store, res = ingest(path)
    assert res.spans == 4
    assert any("clock skew" in p["message"] for p in res.problems.items)
    from triage.analyzers import stages

    stages.build(store)
    assert store.scalar("SELECT min(self_ns) FROM span_times") >= 0


def test_tempo_base64_ids(tmp_path):
    doc = json.loads((TRACES / "otlp_proto_example_trace.json").read_text())
    hex_ids = []
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                hex_ids.append(sp["spanId"].lower())
                for k in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(k):
                        sp[k] = base64.b64encode(bytes.fromhex(sp[k])).decode()
    p = tmp_path / "tempo.json"
    p.write_text(json.dumps(doc))
    store, res = ingest(p)
    assert sorted(r[0] for r in store.query("SELECT span_id FROM spans")) == sorted(hex_ids)


def _capture_bodies(n=3):
    return [f.read_bytes() for f in sorted((CAPTURE / "otlp").glob("*.pb"))[:n]]


def _proto_count(body):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    r = ExportTraceServiceRequest()
    r.ParseFromString(body)
    return sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans)


def test_collector_file_exporter_proto_framing(tmp_path):
    bodies = _capture_bodies()
    p = tmp_path / "traces.binpb"
    p.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in bodies))
    store, res = ingest(p)
    assert fmt_of(store, p) == "otlp-proto-framed"
    assert res.spans == sum(_proto_count(b) for b in bodies)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_files_of_each_format(tmp_path, codec):
    comp = gzip.compress if codec == "gzip" else zstandard.ZstdCompressor().compress
    body = _capture_bodies(1)[0]
    prom = (CAPTURE / "metrics.prom").read_bytes()
    jsonl = (CAPTURE / "otlp" / "00000-v1_traces.json").read_bytes()
    (tmp_path / "a.pb.x").write_bytes(comp(body))
    (tmp_path / "b.prom.x").write_bytes(comp(prom))
    (tmp_path / "c.json.x").write_bytes(comp(jsonl))
    store, res = ingest(tmp_path)
    assert res.problems.count == 0 and res.skipped == []
    assert res.spans == _proto_count(body) + _otlp_count(json.loads(jsonl))
    assert res.samples == sum(1 for l in prom.decode().splitlines() if l and not l.startswith("#"))
    assert {r[0] for r in store.query("SELECT format FROM inputs")} == {
        f"otlp-proto+{codec}", f"prometheus-text+{codec}", f"otlp-json+{codec}"}


def test_prometheus_api_json_vector_and_matrix(tmp_path):
    vec = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "nv_gpu_utilization", "gpu_uuid": "GPU-1"}, "value": [1700000000.5, "0.25"]}]}}
    mat = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "nv_inference_queue_duration_us", "model": "clf"},
         "values": [[1700000000, "1"], [1700000015, "NaN"], [1700000030, "+Inf"]]}]}}
    (tmp_path / "q.json").write_text(json.dumps(vec))
    (tmp_path / "qr.json").write_text(json.dumps(mat))
    store, res = ingest(tmp_path)
    assert res.samples == 4 and res.problems.count == 0
    assert store.query("SELECT ts_ms, value FROM samples WHERE metric = 'nv_gpu_utilization'") == [(1700000000500, 0.25)]
    assert store.scalar("SELECT labels['model'] FROM samples WHERE metric = 'nv_inference_queue_duration_us' LIMIT 1") == "clf"


# -- metrics: every real scrape and documented example -------------------------------------------

_SAMPLE_LINE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?\s+\S+")


def _independent_sample_count(text):
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
               and _SAMPLE_LINE.match(line.strip()))


PROM_FILES = sorted(p.relative_to(METRICS).as_posix() for p in METRICS.rglob("*.prom"))
assert len(PROM_FILES) == 6, PROM_FILES  # bundled: three documented examples, three real scrapes


@pytest.mark.parametrize("rel", PROM_FILES)
def test_every_prometheus_fixture(rel):
    path = METRICS / rel
    text = path.read_text()
    store, res = ingest(path)
    assert res.samples == _independent_sample_count(text) > 0
    assert res.problems.count == 0, res.problems.items[:3]
    # names with colons (vLLM) and label values with escapes survive
    names = {r[0] for r in store.query("SELECT DISTINCT metric FROM samples")}
    assert names == {re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", l.strip()).group(1) for l in text.splitlines()
                     if l.strip() and not l.lstrip().startswith("#")}


def test_non_telemetry_fixtures_are_skipped_with_a_reason():
    store, res = ingest(METRICS)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in res.skipped}
    assert {"dcgm-exporter_grafana_dashboard.json", "tgi_grafana.json", "triton_k8s-onprem_grafana_dashboard.json",
            "dcgm-exporter_default-counters.csv", "torchserve_default_metrics.yaml"} <= set(reasons)
