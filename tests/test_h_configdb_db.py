"""--db files: one held by another triage, one that is not DuckDB, one that is truncated, or one that is DuckDB
but not a triage store, each get a clear error naming the file and exit 2, never a traceback; and
`triage --db X live` keeps what the session received in X (issue 11)."""
import json
import os
import select
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import requests

from triage.analyzers.constraints import Constraints
from conftest import ROOT, SAMPLES
from triage.cli.main import main


def _report_db(db, capsys, *paths):
    rc = main(["report", *map(str, paths), "--db", str(db), "--format", "json"])
    return rc, capsys.readouterr()


def test_a_db_held_by_another_triage_is_named(tmp_path, capsys):
    db = tmp_path / "store.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from triage.collectors.store import Store; s = Store(sys.argv[1]); "
                               "print('ready', flush=True); sys.stdin.read()", str(db)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready and holder.stdout.readline().strip() == "ready"
        rc, out = _report_db(db, capsys, SAMPLES / "healthy")
        assert rc == 2 and out.out == ""
        assert str(db) in out.err and "another triage" in out.err and f"PID {holder.pid}" in out.err, out.err
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_file_that_is_not_duckdb_is_named_and_left_alone(tmp_path, capsys):
    db = tmp_path / "notes.txt"
    db.write_text("my notes, not a database\n" * 100)
    before = db.read_bytes()
    rc, out = _report_db(db, capsys, SAMPLES / "healthy")
    assert rc == 2 and str(db) in out.err and "not a DuckDB database" in out.err, out.err
    assert db.read_bytes() == before


def test_a_truncated_db_is_named_and_left_alone(tmp_path, capsys):
    db = tmp_path / "store.duckdb"
    assert _report_db(db, capsys, SAMPLES / "overload")[0] == 0
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    rc, out = _report_db(db, capsys)
    assert rc == 2 and str(db) in out.err and "damaged or truncated" in out.err, out.err
    assert db.read_bytes() == data[: len(data) // 2]


def test_a_duckdb_file_of_another_program_is_named(tmp_path, capsys):
    import duckdb

    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE spans (id INTEGER)")
    con.close()
    rc, out = _report_db(db, capsys, SAMPLES / "healthy")
    assert rc == 2 and str(db) in out.err and "not a triage store" in out.err, out.err


def _post_spans(endpoint: str, n: int, t0_ns: int) -> int:
    spans = [{"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "POST /predict", "kind": 2,
              "startTimeUnixNano": str(t0_ns + i * 1_000_000), "endTimeUnixNano": str(t0_ns + i * 1_000_000 + 5_000_000),
              "attributes": [{"key": "http.route", "value": {"stringValue": "/predict"}}],
              "events": [{"name": "e", "timeUnixNano": str(t0_ns + i * 1_000_000 + 1_000_000)}]} for i in range(n)]
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]},
                               "scopeSpans": [{"spans": spans}]}]}
    r = requests.post(endpoint, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    return n


def _db_counts(db):
    from triage.collectors.store import Store

    s = Store(db)
    try:
        return (s.scalar("SELECT count(*) FROM spans"), s.scalar("SELECT count(DISTINCT span_id) FROM spans"),
                s.scalar("SELECT count(*) FROM span_events"), s.query("SELECT format, spans, complete FROM inputs"))
    finally:
        s.close()


def test_live_with_db_keeps_what_it_received(tmp_path):
    """`triage --db X live --for ...`: the spans received are in X afterwards, and a report of X shows them."""
    db = tmp_path / "live.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "triage", "--db", str(db), "live", "--for", "8s", "--settle", "0s",
                             "--otlp-listen", "127.0.0.1:0", "--format", "json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoint, seen, deadline = None, b"", time.monotonic() + 60
        fd = proc.stderr.fileno()  # read unbuffered: a buffered reader can hold the line that select saw
        while endpoint is None and time.monotonic() < deadline and proc.poll() is None:
            if select.select([fd], [], [], 1.0)[0]:
                seen += os.read(fd, 4096)
                for line in seen.decode(errors="replace").splitlines():
                    if "receiving OTLP on http://" in line:
                        endpoint = line.split("receiving OTLP on ", 1)[1].split(",")[0].strip()
        assert endpoint, f"the live session never said where it receives: {seen!r}"
        sent = _post_spans(endpoint, 25, time.time_ns() - 1_000_000_000)
        out, err = proc.communicate(timeout=60)
        err = seen.decode(errors="replace") + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["inputs"]["spans"] == sent
    spans, distinct, events, inputs = _db_counts(db)
    assert (spans, distinct, events) == (sent, sent, sent)
    assert inputs == [("otlp-live", sent, True)]


def test_live_db_gets_each_span_once_when_spans_leave_the_window(tmp_path):
    from triage.sessions.live import LiveSession

    db = tmp_path / "live.duckdb"
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=60, settle_s=0, db=str(db)).start()
    try:
        sent = _post_spans(s.otlp_endpoint, 10, time.time_ns() - 1_000_000_000)
        assert s.refresh().report["inputs"]["spans"] == sent
        # ten minutes on (the window follows the receiver's arrival clock): those spans leave the window (and
        # the in-memory store), but not the --db file
        real_clock = s._receiver.clock
        s._receiver.clock = lambda: real_clock() + 600 * 10**9
        assert s.refresh(now=datetime.now(timezone.utc) + timedelta(minutes=10)).report["inputs"]["spans"] == 0
        sent += _post_spans(s.otlp_endpoint, 5, time.time_ns())  # ids 1..5 again: the first ones left the window
    finally:
        s.stop()
    spans, _, events, inputs = _db_counts(db)
    assert spans == sent and events == sent
    assert inputs == [("otlp-live", sent, True)]
