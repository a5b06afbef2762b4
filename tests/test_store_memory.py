"""The store's memory cap (TRIAGE_MEMORY_LIMIT): beyond it DuckDB spills to a private temporary folder, the
analysis is unchanged, and the folder is gone on close."""
import json
import tempfile
import threading
import time

from pathlib import Path

import pytest

from collectors.store import Store, memory_limit_bytes


def _spilling() -> set[Path]:
    """The stores' spill folders that DuckDB has written into."""
    return {p.parent for p in Path(tempfile.gettempdir()).glob("triage-spill-*/duckdb")}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from benchmarks.capture import write_capture

    path = tmp_path_factory.mktemp("cap") / "capture.otlp.jsonl"
    write_capture(path, 150_000)  # ~70 MB of OTLP JSON lines: more than a 64 MiB store holds
    return path


def test_a_capped_store_spills_and_analyses_the_same(capture, monkeypatch):
    from analyzers.session import analyze

    reference = analyze([capture])
    expected = json.dumps(reference.report(), sort_keys=True, default=str)
    reference.store.close()

    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "64MiB")
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(_spilling())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        capped = analyze([capture])
        assert capped.store.scalar("SELECT current_setting('memory_limit')") == "64.0 MiB"
        assert capped.store.spill_dir in seen
        assert capped.store.spill_dir.stat().st_mode & 0o777 == 0o700  # spilled trace data is not for others
        got = json.dumps(capped.report(), sort_keys=True, default=str)
        capped.store.close()
    finally:
        done.set()
        watcher.join()
    assert got == expected
    assert not capped.store.spill_dir.exists()  # removed on close


def test_the_memory_limit_is_checked():
    assert memory_limit_bytes("1GiB") == 1 << 30
    assert memory_limit_bytes("512MB") == 512_000_000
    assert memory_limit_bytes(" 2 gb ") == 2_000_000_000
    for bad, why in (("lots", "not a size"), ("8MB", "below the 64 MiB"), ("12 parsecs", "not a size")):
        with pytest.raises(ValueError, match=why) as exc:
            memory_limit_bytes(bad)
        assert "TRIAGE_MEMORY_LIMIT" in str(exc.value)


def test_a_bad_memory_limit_is_a_clear_cli_error(monkeypatch, capsys):
    from conftest import SAMPLES
    from tui.cli import main

    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "lots")
    assert main(["report", str(SAMPLES / "healthy")]) == 2
    assert "TRIAGE_MEMORY_LIMIT='lots' is not a size" in capsys.readouterr().err
    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "2GB")
    assert Store().scalar("SELECT current_setting('memory_limit')").startswith("1.8")  # 2e9 bytes in GiB


def test_running_out_of_the_limit_says_what_to_change(monkeypatch):
    import duckdb

    from collectors.store import out_of_memory

    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "3GB")
    con = duckdb.connect()
    con.execute("SET memory_limit = '1MB'")
    with pytest.raises(duckdb.OutOfMemoryException) as exc:
        con.execute("SELECT list(range) FROM range(10000000)").fetchall()
    msg = out_of_memory(exc.value)
    assert "TRIAGE_MEMORY_LIMIT" in msg and "(3GB" in msg and "Out of Memory" in msg
    assert out_of_memory(ValueError("x")) is None
