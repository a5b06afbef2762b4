"""Memory and time bounds on hostile or huge inputs (issue 11): decompression bombs, a sparse file of zeros
behind a valid-looking first byte, an endless line. Each input is read in a child process whose peak RSS is
measured (VmHWM, the peak of its own memory: ``ru_maxrss`` would include the parent's at fork time) and which
a watchdog kills past the bound, so a regression fails fast instead of taking the machine's memory. Bombs are generated streaming (nothing of their inflated size is held)."""
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Peak RSS of the whole child (Python, DuckDB, pyarrow: ~120 MiB at rest) while it ingests the input.
RSS_BOUND_MB = 400
TIME_BOUND_S = 60

CHILD = r"""
import json, os, sys, threading, time
def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
sys.path.insert(0, sys.argv[1])
bound = int(sys.argv[2])
def watchdog():
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page
        if rss > bound * 2**20:
            print(json.dumps({"killed_at_mb": rss >> 20}), flush=True)
            os._exit(3)
        time.sleep(0.02)
threading.Thread(target=watchdog, daemon=True).start()
from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store
t = time.monotonic()
r = ingest_paths(Store(), sys.argv[3:])
print(json.dumps({"spans": r.spans, "skipped": r.skipped, "problems": r.problems.items,
                  "secs": time.monotonic() - t,
                  "peak_mb": peak_mb()}))
"""


def ingest_in_child(*paths) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(RSS_BOUND_MB), *map(str, paths)],
                          capture_output=True, text=True, timeout=TIME_BOUND_S * 3)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "killed_at_mb" not in out, f"peak RSS passed {RSS_BOUND_MB} MiB: {out}"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out["peak_mb"] < RSS_BOUND_MB and out["secs"] < TIME_BOUND_S, out
    return out


def zstd_bomb(path: Path, gib: int) -> None:
    import zstandard

    zero = bytes(1 << 20)
    with open(path, "wb") as f:
        w = zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False)
        for _ in range(gib << 10):
            w.write(zero)
        w.flush(zstandard.FLUSH_FRAME)


def gzip_bomb(path: Path, gib: int) -> None:
    """Members of 64 MiB of zeros, back to back (valid gzip, RFC 1952): compressed once, written gib*16 times."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()
    with open(path, "wb") as f:
        for _ in range(gib * 16):
            f.write(member)


@pytest.mark.parametrize("make, name", [(zstd_bomb, "bomb.zst"), (gzip_bomb, "bomb.gz")])
def test_decompression_bomb_is_detected_from_its_head(tmp_path, make, name):
    p = tmp_path / name
    make(p, 2)
    assert p.stat().st_size < 4 << 20
    out = ingest_in_child(p)
    assert out["spans"] == 0
    assert [s["path"] for s in out["skipped"]] == [str(p)]


def test_bomb_with_a_telemetry_head_stops_at_the_budget(tmp_path, monkeypatch):
    """A compressed file that inflates past the per-file budget is read up to it, and says so."""
    from triage.collectors import streams
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    import zstandard

    line = json.dumps({"resourceSpans": []}).encode() + b"\n"
    p = tmp_path / "many.jsonl.zst"
    with open(p, "wb") as f:
        w = zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False)
        for _ in range(64):
            w.write(line * ((1 << 20) // len(line)))
        w.flush(zstandard.FLUSH_FRAME)
    monkeypatch.setattr(streams, "MAX_DECOMPRESSED_BYTES", 8 << 20)
    res = ingest_paths(Store(), [p])
    assert any("inflates beyond" in x["message"] for x in res.problems.items), res.problems.items


def test_one_decompression_step_is_bounded():
    """Whatever the ratio, a read of n bytes decodes at most n + STEP_BYTES."""
    import io

    import zstandard

    from triage.collectors import streams

    data = zstandard.ZstdCompressor(level=1).compress(bytes(256 << 20))
    d = streams.Decompressed(io.BytesIO(data), "zstd")
    assert len(d.read(100)) == 100
    assert len(d._buf) <= 100 + (16 << 20)  # streams.STEP_BYTES is 8 MiB
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = c.compress(bytes(256 << 20)) + c.flush()
    d = streams.Decompressed(io.BytesIO(data), "gzip")
    assert len(d.read(100)) == 100
    assert len(d._buf) <= 100 + (16 << 20)  # streams.STEP_BYTES is 8 MiB


def test_sparse_2gb_file_starting_with_a_newline(tmp_path):
    p = tmp_path / "zeros.pb"
    with open(p, "wb") as f:
        f.write(b"\n")
        f.truncate(2 << 30)  # sparse: no disk, no time
    out = ingest_in_child(p)
    assert out["spans"] == 0 and out["secs"] < 10
    assert [s["path"] for s in out["skipped"]] == [str(p)]


def test_resource_spans_then_zeros(tmp_path):
    p = tmp_path / "zeros.json"
    with open(p, "wb") as f:
        f.write(b'{"resourceSpans":[')
        f.truncate(2 << 30)
    out = ingest_in_child(p)
    assert out["spans"] == 0 and out["secs"] < 10
    assert any("NUL byte" in x["message"] for x in out["problems"]), out


def test_protobuf_salvage_stops_at_an_invalid_tag():
    """Field number 0 never occurs in protobuf: the walk stops there instead of crawling through zeros."""
    import time

    from triage.collectors.proto_salvage import salvage_request

    t = time.monotonic()
    assert salvage_request(b"\n" + bytes(64 << 20)) is None
    assert time.monotonic() - t < 2


def _good_line() -> bytes:
    sp = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s", "kind": 2,
          "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000"}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [sp]}]}]}).encode() + b"\n"


@pytest.mark.parametrize("compressed", [False, True])
def test_endless_line_after_a_good_one(tmp_path, compressed):
    """A valid JSON line, then 1 GiB without a line feed (zeros): the line is skipped past 64 MiB
    (streams.MAX_LINE_BYTES), not accumulated; the good span loads."""
    if compressed:
        import zstandard

        p = tmp_path / "t.jsonl.zst"
        with open(p, "wb") as f:
            w = zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False)
            w.write(_good_line())
            for _ in range(1024):
                w.write(bytes(1 << 20))
            w.flush(zstandard.FLUSH_FRAME)
    else:
        p = tmp_path / "t.jsonl"
        with open(p, "wb") as f:
            f.write(_good_line())
            f.truncate(1 << 30)
    out = ingest_in_child(p)
    assert out["spans"] == 1
    assert any("longer than 64 MiB" in x["message"] for x in out["problems"]), out
