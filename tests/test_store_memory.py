"""The store's memory cap (TRIAGE_MEMORY_LIMIT): beyond it DuckDB spills to a private temporary folder, the
analysis is unchanged, and the folder is gone on close."""
import json
from pathlib import Path

import pytest

from triage.collectors.store import Store, memory_limit_bytes


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from benchmarks.capture import write_capture

    path = tmp_path_factory.mktemp("cap") / "capture.otlp.jsonl"
    write_capture(path, 150_000)  # ~70 MB of OTLP JSON lines: more than a 64 MiB store holds
    return path


def test_a_capped_store_spills_and_analyses_the_same(capture, monkeypatch):
    from triage.sessions.offline import analyze

    reference = analyze([capture])
    expected = json.dumps(reference.report(), sort_keys=True, default=str)
    reference.store.close()

    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "96MiB")  # the minimum (64) left no room for operators that cannot spill: one CI run ran out
    capped = analyze([capture])
    store = capped.store
    assert store.scalar("SELECT current_setting('memory_limit')") == "96.0 MiB"
    spilled = [Path(p) for p, _ in store.query("SELECT path, size FROM duckdb_temporary_files()")]
    assert spilled and all(p.parent == store.spill_dir / "duckdb" for p in spilled)
    assert store.spill_dir.stat().st_mode & 0o777 == 0o700  # spilled trace data is not for other users
    got = json.dumps(capped.report(), sort_keys=True, default=str)
    store.close()
    assert got == expected
    assert not store.spill_dir.exists()  # removed on close


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
    from triage.cli.main import main

    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "lots")
    assert main(["report", str(SAMPLES / "healthy")]) == 2
    assert "TRIAGE_MEMORY_LIMIT='lots' is not a size" in capsys.readouterr().err
    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "2GB")
    assert Store().scalar("SELECT current_setting('memory_limit')").startswith("1.8")  # 2e9 bytes in GiB


def test_running_out_of_the_limit_says_what_to_change(monkeypatch):
    import duckdb

    from triage.collectors.store import out_of_memory

    monkeypatch.setenv("TRIAGE_MEMORY_LIMIT", "3GB")
    con = duckdb.connect()
    con.execute("SET memory_limit = '1MB'")
    with pytest.raises(duckdb.OutOfMemoryException) as exc:
        con.execute("SELECT list(range) FROM range(10000000)").fetchall()
    msg = out_of_memory(exc.value)
    assert "TRIAGE_MEMORY_LIMIT" in msg and "(3GB" in msg and "Out of Memory" in msg
    assert out_of_memory(ValueError("x")) is None
