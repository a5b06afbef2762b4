"""Paths that must cost only their own entry (issue 11): a non-UTF-8 file name, a symlink into a folder that
cannot be read, a capture folder that is a symlink to ``/``, symlink loops, FIFOs. Each is listed in
``inputs.skipped`` with its reason (or loaded), and the rest of the capture loads and reports."""
import errno
import json
import os
from pathlib import Path

import orjson
import pytest

from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store
from triage.cli.main import main

TID = "5b8efff798038103d269b633813fc60c"


def line(i: int) -> bytes:
    sp = {"traceId": TID, "spanId": f"{i:016x}", "name": "s", "kind": 2,
          "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000"}
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [sp]}]}]}) + b"\n"


def proto(i: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    r = ExportTraceServiceRequest()
    sp = r.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.name = bytes.fromhex(TID), i.to_bytes(8, "big"), "p"
    sp.start_time_unix_nano, sp.end_time_unix_nano = 1544712660000000000, 1544712661000000000
    return r.SerializeToString()


def report(path, capsys) -> dict:
    assert main(["report", str(path), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_latin1_file_name(tmp_path, capsys):
    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "good.jsonl").write_bytes(line(1))
    bad = os.path.join(os.fsencode(cap), b"caf\xe9.pb")
    with open(bad, "wb") as f:
        f.write(proto(2))
    rep = report(cap, capsys)
    assert rep["inputs"]["spans"] == 2 and rep["inputs"]["files"] == 2
    store = Store()
    res = ingest_paths(store, [cap])
    assert res.spans == 2 and len(res.paths) == 2
    assert store.scalar("SELECT count(*) FROM inputs WHERE path LIKE ?", ["%caf\\xe9.pb"]) == 1  # escaped


def test_symlink_into_unreadable_folder(tmp_path, capsys, monkeypatch):
    """As root every folder is readable, so the refusal is simulated where the kernel would give it: stat
    of anything under ``locked`` raises EACCES."""
    cap, locked = tmp_path / "cap", tmp_path / "locked"
    cap.mkdir()
    locked.mkdir()
    (locked / "secret.jsonl").write_bytes(line(9))
    (cap / "good.jsonl").write_bytes(line(1))
    (cap / "link").symlink_to(locked)
    real_stat = os.stat

    def stat(p, *a, **kw):
        if str(locked) in os.fsdecode(os.path.realpath(p)):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(p))
        return real_stat(p, *a, **kw)

    monkeypatch.setattr(os, "stat", stat)
    rep = report(cap, capsys)
    skipped = {s["path"]: s["reason"] for s in rep["inputs"]["skipped"]}
    assert "Permission denied" in skipped[str(cap / "link")]
    store = Store()
    assert ingest_paths(store, [cap]).spans == 1


def test_capture_folder_that_is_a_symlink_to_root(tmp_path, capsys, monkeypatch):
    """The walk does not enter /proc (nor /sys, /dev), never loops, and stops at its bound (made small here
    so that the test reads a few hundred files of / rather than all of them)."""
    from triage.collectors import walk as walk_mod

    link = tmp_path / "capture"
    link.symlink_to("/")
    monkeypatch.setattr(walk_mod, "MAX_FILES", 300)
    assert main(["report", str(link), "--format", "json"]) == 2  # no telemetry in /: said, not a traceback
    assert "walk stopped at 300 files" in capsys.readouterr().err
    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "good.jsonl").write_bytes(line(1))
    (cap / "root").symlink_to("/")
    rep = report(cap, capsys)
    assert rep["inputs"]["spans"] == 1
    reasons = " | ".join(s["reason"] for s in rep["inputs"]["skipped"])
    assert "walk stopped at 300 files" in reasons
    files, _, skipped = walk_mod.walk([link], max_files=3000)
    assert not any(str(f).startswith(str(link / "proc") + "/") for f in files)


def test_symlink_loops_fifos_and_dangling_links(tmp_path):
    cap = tmp_path / "cap"
    (cap / "sub").mkdir(parents=True)
    (cap / "good.jsonl").write_bytes(line(1))
    (cap / "sub" / "up").symlink_to(cap)  # a cycle
    (cap / "self").symlink_to(cap / "self")  # ELOOP
    (cap / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(cap / "pipe.jsonl")  # opening it would block for ever
    store = Store()
    res = ingest_paths(store, [cap])
    assert res.spans == 1 and res.files == 1
    reasons = {Path(s["path"]).name: s["reason"] for s in res.skipped}
    assert reasons["self"] == "symlink loop"
    assert reasons["pipe.jsonl"] == "a named pipe"
    assert "dangling" in reasons["dangling"]
    assert "already walked" in reasons["up"]


def test_file_that_vanishes_between_walk_and_read(tmp_path, monkeypatch):
    from triage.collectors import ingest

    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "a.jsonl").write_bytes(line(1))
    (cap / "b.jsonl").write_bytes(line(2))
    real = ingest.safe_walk

    def walk_then_remove(paths):
        out = real(paths)
        (cap / "a.jsonl").unlink()
        return out

    monkeypatch.setattr(ingest, "safe_walk", walk_then_remove)
    res = ingest_paths(Store(), [cap])
    assert res.spans == 1
    assert any(s["path"].endswith("a.jsonl") and "unreadable" in s["reason"] for s in res.skipped)
