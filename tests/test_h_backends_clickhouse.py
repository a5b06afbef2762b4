"""ClickHouse as a source (issue 18): the OTel Collector clickhouseexporter's own DDL in chDB, the real Triton
capture written into it as the exporter writes spans, and triage's SQL (the same text a server is sent) run
over it. The headline is exact; the detail is whole traces sampled by trace id; every failure the user can fix
is one line and exit 2."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import CAPTURE, ROOT, need

chdb = pytest.importorskip("chdb", reason="the ClickHouse source tests run the SQL in chDB (pip install chdb)")
from chdb_otel import load_capture  # noqa: E402

WINDOW = ["--from", "2026-11-30T08:00:00Z", "--to", "2026-11-30T10:00:00Z"]  # the capture is 08:58-08:59


def run(*args, env=None):
    out = subprocess.run([sys.executable, "-m", "triage", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)
    return out.returncode, out.stdout, out.stderr


def _store(tmp_path_factory, variant: str) -> str:
    from chdb import session

    d = tmp_path_factory.mktemp(f"chdb_{variant}")
    s = session.Session(str(d))
    try:
        load_capture(s, [str(need(CAPTURE) / "otlp")], variant=variant)
    finally:
        s.close()
    return f"chdb://{d}/otel"


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    return _store(tmp_path_factory, "current")


@pytest.fixture(scope="module")
def file_report():
    rc, out, err = run("report", CAPTURE, "--format", "json")
    assert rc == 0, err
    rc, md, err = run("report", CAPTURE)
    assert rc == 0, err
    return json.loads(out), md


def _side_inputs():
    return [CAPTURE / "metrics.prom", CAPTURE / "config.pbtxt"]  # what a backend of traces does not hold


def _latency_table(md: str) -> list[str]:
    lines = md.splitlines()
    i = lines.index("### Latency")
    return lines[i:lines.index("", i + 3)]


def test_capture_through_clickhouse_gives_the_same_findings_and_latency(current, file_report):
    want, want_md = file_report
    rc, out, err = run("report", current, *_side_inputs(), *WINDOW, "--format", "json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["findings"] == want["findings"]
    assert {r: {k: v for k, v in d.items() if k != "basis"} for r, d in got["latency"].items()} == want["latency"]
    assert all(d["basis"] == "exact" for d in got["latency"].values())
    assert got["stages"] == want["stages"]
    assert got["figures"] == {"latency": "exact", "stages": "exact", "findings": "exact", "sample_rate": 1.0}
    src = got["sources"][0]
    assert src["spans_in_window"] == want["inputs"]["spans"] == src["detail"]["rows_transferred"]
    assert src["requests_in_window"] == sum(d["requests"] for d in want["latency"].values())
    rc, md, err = run("report", current, *_side_inputs(), *WINDOW)
    assert rc == 0, err
    assert _latency_table(md) == _latency_table(want_md)
    assert "latency exact (aggregated by the backend over every request)" in md


def test_older_exporter_schema_gives_the_same_headline(tmp_path_factory, file_report):
    """Duration Int64, no ScopeName/ScopeVersion columns: the exporter's DDL before 2024."""
    url = _store(tmp_path_factory, "v0")
    rc, out, err = run("report", url, *WINDOW, "--format", "json")
    assert rc == 0, err
    got = json.loads(out)
    assert {r: {k: v for k, v in d.items() if k != "basis"} for r, d in got["latency"].items()} == \
        file_report[0]["latency"]


def test_sampled_detail_keeps_the_exact_headline_and_whole_traces(current, file_report):
    rc, out, err = run("report", current, *WINDOW, "--max-spans", "3000", "--format", "json")
    assert rc == 0, err
    got = json.loads(out)
    d = got["sources"][0]["detail"]
    assert d["basis"] == "sampled" and 0.15 < d["rate"] < 0.3
    assert got["figures"]["stages"] == got["figures"]["findings"] == "sampled"
    assert got["figures"]["latency"] == "exact"
    # the headline is the backend's aggregate over all 1,949 requests, not the sample's
    assert {r: {k: v for k, v in x.items() if k != "basis"} for r, x in got["latency"].items()} == \
        file_report[0]["latency"]
    assert d["rows_transferred"] == got["inputs"]["spans"] < file_report[0]["inputs"]["spans"]
    # whole traces: every sampled trace has the 7 spans each request of this capture has
    assert got["inputs"]["spans"] == 7 * got["inputs"]["traces"]
    rc, md, _ = run("report", current, *WINDOW, "--max-spans", "3000")
    assert "stages and findings on " in md and "of the traces (whole traces, sampled by trace id)" in md


def test_service_and_name_filters_are_pushed_down(current, file_report):
    rc, out, err = run("report", current + "?service=gateway&name=POST%20/v1/classify", *WINDOW, "--format", "json")
    assert rc == 0, err
    got = json.loads(out)
    assert {r: {k: v for k, v in d.items() if k != "basis"} for r, d in got["latency"].items()} == \
        file_report[0]["latency"]
    assert got["inputs"]["spans"] == file_report[0]["inputs"]["spans"]  # whole traces, both services
    assert "whose ServiceName = 'gateway' and SpanName = 'POST /v1/classify'" in got["sources"][0]["latency"]["over"]
    _fails([current + "?service=triton", *WINDOW], "no request in otel.otel_traces", "ServiceName = 'triton'")


# --- errors the user can fix: one line, exit 2, no traceback ---------------------------------------------

def _fails(args, *needles, env=None):
    rc, out, err = run("report", *args, env=env)
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_empty_window_says_what_the_table_holds(current):
    _fails([current, "--from", "2026-12-01T00:00:00Z", "--to", "2026-12-01T01:00:00Z"],
           "no spans in otel.otel_traces between 2026-12-01T00:00:00Z and 2026-12-01T01:00:00Z",
           "it holds 13,643 spans from 2026-11-30T08:58:23Z", "widen --since")


def test_missing_table_lists_the_tables_there(current):
    _fails([current + "?table=traces", *WINDOW], "no table otel.traces", "otel_traces", "?table=NAME")


def test_unrecognised_schema_names_the_missing_columns(tmp_path):
    from chdb import session

    s = session.Session(str(tmp_path))
    s.query("CREATE DATABASE otel")
    s.query("CREATE TABLE otel.otel_traces (Timestamp DateTime64(9), TraceId String, SpanId String, "
            "SpanName String) ENGINE = MergeTree ORDER BY Timestamp")
    s.close()
    _fails([f"chdb://{tmp_path}/otel", *WINDOW], "not the OpenTelemetry clickhouseexporter trace schema",
           "missing column(s) ParentSpanId, SpanKind, ServiceName, ResourceAttributes, SpanAttributes, Duration, "
           "StatusCode, StatusMessage")


def test_password_in_the_url_is_refused_and_not_shown():
    err = _fails(["clickhouse://alice:s3cret@localhost:8123/otel"], "refused", "TRIAGE_CLICKHOUSE_PASSWORD")
    assert "s3cret" not in err


def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    _fails([f"clickhouse://127.0.0.1:{port}/otel", "--since", "5m"], f"ClickHouse at 127.0.0.1:{port} is unreachable")


def test_wrong_credentials(tmp_path):
    """A loopback stand-in answers as ClickHouse's HTTP interface does for a bad password (HTTP 516 with its
    exception text): the message names the user and where the password is read from, never the password."""
    class Deny(http.server.BaseHTTPRequestHandler):
        def _deny(self):
            body = (b"Code: 516. DB::Exception: alice: Authentication failed: password is incorrect, or there is no "
                    b"user with such name. (AUTHENTICATION_FAILED) (version 24.8.1.1)\n")
            self.send_response(516)
            self.send_header("X-ClickHouse-Exception-Code", "516")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _deny

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        secret = tmp_path / "pw"
        secret.write_text("wrong-password\n")
        err = _fails([f"clickhouse://alice@127.0.0.1:{srv.server_port}/otel", "--since", "5m"],
                     "refused user 'alice'", "TRIAGE_CLICKHOUSE_PASSWORD", env={"TRIAGE_CLICKHOUSE_PASSWORD_FILE": str(secret)})
        assert "wrong-password" not in err
    finally:
        srv.shutdown()


async def test_replay_opens_the_tui_on_a_backend(current):
    """`triage replay clickhouse://...`: the TUI's session reads the backend like the report does."""
    from textual.widgets import Static

    from triage.collectors.backends import resolve
    from triage.tui.app import TriageApp

    paths = resolve([current, *map(str, _side_inputs())], None, WINDOW[1], WINDOW[3])
    app = TriageApp(paths=paths, source_title=current)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "1,949 requests" in summary
        # the screen says which figures are exact (the whole capture fits in --max-spans: all of them)
        assert "latency exact · stages and findings on every trace of the window" in summary, summary
        assert "batching-window" in str(app.screen.query_one("#top-finding", Static).render())


def test_capture_copies_the_window_into_a_replayable_folder(current, file_report, tmp_path):
    import shutil

    out = tmp_path / "cap"
    rc, _, err = run("capture", "--from-backend", current, *WINDOW, "--out", out)
    assert rc == 0, err
    assert "wrote 13643 spans" in err and "every trace of the window" in err
    note = (out / "source.md").read_text()
    assert "| gateway POST /v1/classify | 1,949 | 18.162 | 47.49 | 64.512 | 0.0 |" in note
    for f in _side_inputs():
        shutil.copy(f, out)
    rc, got, err = run("report", out, "--format", "json")
    assert rc == 0, err
    got = json.loads(got)
    key = lambda f: (f["rule"], f["severity"], f["summary"], f["scope"])  # noqa: E731  (evidence names the folder)
    assert [key(f) for f in got["findings"]] == [key(f) for f in file_report[0]["findings"]]
    assert got["latency"] == file_report[0]["latency"] and got["stages"] == file_report[0]["stages"]
    rc, _, err = run("capture", "--out", tmp_path / "none")
    assert rc == 2 and "--for DURATION" in err


def test_live_polls_the_backend_window_at_every_refresh(current):
    """`live --from-backend URL`: each refresh replaces the last poll with the moving window's traces."""
    from datetime import datetime, timezone

    from triage.analyzers.constraints import Constraints
    from triage.sessions.live import LiveSession

    s = LiveSession(constraints=Constraints(), listen=None, window_s=3600, settle_s=0, backend=current).start()
    try:
        at = datetime(2026, 11, 30, 9, 30, tzinfo=timezone.utc)  # the capture (08:58-08:59) is in the hour
        first = s.refresh(at)
        again = s.refresh(at)
        assert first.report["inputs"]["spans"] == again.report["inputs"]["spans"] == 13643  # replaced, not added
        assert again.report["figures"]["latency"] == "exact" and again.status["backend"] == "ok"
        later = s.refresh(datetime(2026, 11, 30, 11, 0, tzinfo=timezone.utc))  # the window has moved past it
        assert later.report["inputs"]["spans"] == 0 and later.status["backend"].startswith("stale: ")
        assert "no spans in otel.otel_traces" in later.status["backend"]
    finally:
        s.stop()


def test_a_db_store_read_twice_holds_the_window_once(current, tmp_path):
    db = tmp_path / "t.duckdb"
    for _ in range(2):
        rc, out, err = run("--db", db, "report", current, *WINDOW, "--format", "json")
        assert rc == 0, err
        assert json.loads(out)["inputs"]["spans"] == 13643
