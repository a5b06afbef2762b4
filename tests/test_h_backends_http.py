"""Tempo and Jaeger as sources (issue 18), contract-tested only: no Tempo or Jaeger server runs here, so the
readers are run against response bodies recorded from those projects' own test data and docs
(tests/fixtures/backends/, tests/fixtures/traces/; provenance in tests/fixtures/SOURCES.md), served on
loopback by a stand-in that also checks the requests triage sends."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import ROOT, SHARED, need

BODIES = SHARED / "backends"
WINDOW = ["--from", "2021-10-20T00:00:00Z", "--to", "2021-11-13T00:00:00Z"]


def run(*args, env=None):
    out = subprocess.run([sys.executable, "-m", "triage", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)
    return out.returncode, out.stdout, out.stderr


class Stub:
    """A loopback HTTP server answering GETs from ``routes``: path -> (status, bytes); records each request."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.seen: list[tuple[str, dict, dict]] = []
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                u = urlsplit(self.path)
                stub.seen.append((u.path, parse_qs(u.query), dict(self.headers)))
                status, body = stub.routes.get(u.path, (404, b'{"error":"not found"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.port = self.srv.server_port

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def stub():
    made = []

    def make(routes):
        s = Stub(routes)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def _otlp_span_count(doc) -> int:
    doc = doc.get("result", doc)
    return sum(len(ss.get("spans") or []) for rs in doc["resourceSpans"] for ss in rs.get("scopeSpans") or [])


# --- Tempo --------------------------------------------------------------------------------------------------

def test_tempo_search_then_each_trace_by_id(stub):
    search = need(BODIES / "tempo_search_docs_example.json").read_bytes()  # Tempo's docs: 2 traces found
    trace = need(BODIES / "tempo_vulture_trace.json").read_bytes()  # Tempo's vulture test data: OTLP JSON, base64 ids
    s = stub({"/api/search": (200, search),
              "/api/v2/traces/d6e9329d67b6146a": (200, b'{"trace": ' + trace + b', "metrics": {}}')})
    rc, out, err = run("report", f"tempo://127.0.0.1:{s.port}?service=frontend&limit=50", *WINDOW, "--format", "json")
    assert rc == 0, err
    rep = json.loads(out)
    want = _otlp_span_count(json.loads(trace))
    assert rep["inputs"]["spans"] == want and rep["inputs"]["traces"] == 1
    path, q, _ = s.seen[0]
    assert path == "/api/search"
    assert q["start"] == ["1634688000"] and q["end"] == ["1636761600"] and q["limit"] == ["50"]
    assert q["q"] == ['{resource.service.name="frontend"}']
    # the second trace: not at /api/v2 nor /api/traces -> one problem, the report stands on the first
    assert [p for p, _, _ in s.seen[1:]] == ["/api/v2/traces/d6e9329d67b6146a", "/api/v2/traces/1b1ba462b409200d",
                                             "/api/traces/1b1ba462b409200d"]
    assert any("1b1ba462b409200d" in p["where"] for p in rep["inputs"]["problems"]["items"])
    # base64 ids decoded: MUkZX/sL7AU0e0jv6OzBsA== is this trace's id
    assert rep["findings"] is not None and "tempo-vulture vulture-68" in rep["latency"]
    src = rep["sources"][0]
    assert src["kind"] == "tempo" and src["traces_found"] == 2 and src["detail"]["traces_fetched"] == 1
    assert rep["figures"] == {"latency": "sampled", "stages": "sampled", "findings": "sampled", "sample_rate": None}
    assert all(d["basis"] == "sampled" for d in rep["latency"].values())


def test_tempo_without_v2_reads_the_v1_trace_endpoint(stub):
    search = need(BODIES / "tempo_search_docs_example.json").read_bytes()
    trace = need(BODIES / "tempo_vulture_trace.json").read_bytes()
    s = stub({"/api/search": (200, search), "/api/traces/d6e9329d67b6146a": (200, trace)})
    rc, out, err = run("report", f"tempo://127.0.0.1:{s.port}", *WINDOW, "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["inputs"]["spans"] == _otlp_span_count(json.loads(trace))


def test_tempo_empty_window_and_bad_credentials(stub):
    s = stub({"/api/search": (200, b'{"traces": [], "metrics": {"inspectedBytes": "0"}}')})
    rc, _, err = run("report", f"tempo://127.0.0.1:{s.port}", "--since", "15m")
    assert rc == 2 and "Tempo found no traces between" in err and "Traceback" not in err
    s = stub({"/api/search": (401, b"Unauthorized")})
    rc, _, err = run("report", f"tempo://127.0.0.1:{s.port}", "--since", "15m",
                     env={"TRIAGE_TEMPO_BEARER_TOKEN": "tok-secret"})
    assert rc == 2 and "refused the credentials (HTTP 401)" in err and "tok-secret" not in err
    assert s.seen[0][2].get("Authorization") == "Bearer tok-secret"  # sent as a header, never in the URL


def test_unreachable_tempo():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc, _, err = run("report", f"tempo://127.0.0.1:{port}", "--since", "5m")
    assert rc == 2 and f"Tempo at 127.0.0.1:{port} is unreachable: connection refused" in err
    assert err.count("\n") == 1


# --- Jaeger -------------------------------------------------------------------------------------------------

def test_jaeger_api_v3_searches_every_service(stub):
    services = need(BODIES / "jaeger_apiv3_GetServices.json").read_bytes()  # Jaeger's apiv3 snapshot: ["foo"]
    traces = need(SHARED / "traces" / "otlp_jaeger_api_v3_anyvalues.json").read_bytes()  # recorded from Jaeger 2.21
    s = stub({"/api/v3/services": (200, services), "/api/v3/traces": (200, traces)})
    rc, out, err = run("report", f"jaeger://127.0.0.1:{s.port}", *WINDOW, "--format", "json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["inputs"]["spans"] == _otlp_span_count(json.loads(traces))
    path, q, _ = s.seen[1]
    assert path == "/api/v3/traces" and q["query.service_name"] == ["foo"]
    assert q["query.start_time_min"] == ["2021-10-20T00:00:00.000000000Z"]
    assert q["query.start_time_max"] == ["2021-11-13T00:00:00.000000000Z"]
    assert rep["sources"][0]["kind"] == "jaeger" and rep["sources"][0]["detail"]["services"] == 1


def test_jaeger_api_v3_snapshot_span_without_times_is_said(stub):
    """Jaeger's own FindTraces snapshot holds one span with no start or end time: refused, and said."""
    s = stub({"/api/v3/traces": (200, need(BODIES / "jaeger_apiv3_FindTraces.json").read_bytes())})
    rc, _, err = run("report", f"jaeger://127.0.0.1:{s.port}?service=foo", "--since", "15m")
    assert rc == 2 and "Jaeger returned no usable spans" in err and "missing or invalid start/end time" in err


def test_jaeger_classic_api(stub):
    body = need(SHARED / "traces" / "otlp2jaeger-out.jaeger_api.json").read_bytes()  # Jaeger's /api/traces form
    s = stub({"/api/traces": (200, body)})
    rc, out, err = run("report", f"jaeger://127.0.0.1:{s.port}?service=test-service&api=v1", *WINDOW,
                       "--format", "json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["inputs"]["spans"] == sum(len(t["spans"]) for t in json.loads(body)["data"])
    _, q, _ = s.seen[0]
    assert q["service"] == ["test-service"] and q["start"] == ["1634688000000000"] and q["limit"] == ["1000"]
