"""--db survives a `kill -9` in the middle of an ingest: the interrupted input is marked (its `inputs` row stays
incomplete), a report of the file says so, and loading the same input again replaces the partial load instead
of adding to it (issue 11: 354,000 of 999,996 spans kept with no marker, then 354,000 duplicates)."""
import json
import os
import select
import signal
import subprocess
import sys
import time

from conftest import ROOT
from triage.cli.main import main

sys.path.insert(0, str(ROOT / "benchmarks"))
from capture import write_capture  # noqa: E402

# The child ingests with small Arrow chunks (so that one file takes many committed chunks) and, once rows are in
# the database, says how many and waits: the parent kills it there, mid-file, with SIGKILL.
CHILD = r"""
import sys
from triage.collectors import otlp_lines_arrow
from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store

otlp_lines_arrow.CHUNK_BYTES = otlp_lines_arrow.MIN_CHUNK_BYTES
store = Store(sys.argv[1])

def progress(done, total, path):
    n = store.scalar("SELECT count(*) FROM spans")
    if n and done < total:
        print(n, flush=True)
        sys.stdin.read()  # held here, mid-file, until killed

ingest_paths(store, [sys.argv[2]], progress, workers=1)
print("finished", flush=True)
"""


def _kill_mid_ingest(db, capture) -> int:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(capture)], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        line = ""
        while not line and time.monotonic() < deadline:  # poll the child's report of rows in the db
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if ready:
                line = child.stdout.readline().strip() or "eof"
        assert line.isdigit(), f"the ingest never stopped mid-file with rows in the db: {line!r}"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        return int(line)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_killed_ingest_is_marked_and_reloaded_without_duplicates(tmp_path, capsys):
    capture = tmp_path / "traces.otlp.jsonl"
    total = write_capture(capture, 18_000)
    db = tmp_path / "store.duckdb"

    partial = _kill_mid_ingest(db, capture)
    assert 0 < partial < total

    # the file alone tells that its load was interrupted
    assert main(["report", "--db", str(db), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["inputs"]["spans"] == partial
    assert rep["inputs"]["incomplete"] == [{"path": str(capture), "spans": partial}]

    # the same input again: the partial load is replaced, never added to, and the report says so
    main(["report", str(capture), "--db", str(db), "--format", "json"])
    rep = json.loads(capsys.readouterr().out)
    assert rep["inputs"]["spans"] == total
    assert rep["inputs"]["incomplete"] == []
    [reloaded] = rep["inputs"]["reloaded"]
    assert reloaded["path"] == str(capture) and reloaded["spans"] == partial and "interrupted" in reloaded["reason"]

    main(["report", str(capture), "--db", str(db), "--format", "md"])
    md = capsys.readouterr().out
    assert "already in the store" in md and "Reloaded inputs" not in md  # loaded once; nothing left to recover

    from triage.collectors.store import Store

    s = Store(db)
    try:
        assert s.scalar("SELECT count(*) FROM spans") == total
        assert s.scalar("SELECT count(DISTINCT (trace_id, span_id)) FROM spans") == total
        assert s.scalar("SELECT count(*) FROM span_events") == s.scalar(
            "SELECT count(*) FROM (SELECT DISTINCT trace_id, span_id, name, ts_ns FROM span_events)")
        assert s.query("SELECT path, spans, complete FROM inputs") == [(str(capture), total, True)]
    finally:
        s.close()
