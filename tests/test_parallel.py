"""Worker processes start even when sys.stderr has no file descriptor, as under the TUI (Textual captures
it). multiprocessing's resource tracker inherited that descriptor, so every large JSON-lines file failed to
load in the TUI with "bad value(s) in fds_to_keep".

The tracker is started once per process, so each scenario runs in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from triage.collectors.parallel import Pool
from conftest import ROOT

PRELUDE = """
import io, os, sys
sys.path.insert(0, {root!r})

class CapturedStderr(io.StringIO):  # what Textual puts in sys.stderr: writable, no descriptor
    def fileno(self):
        return -1

def pid(_):
    return os.getpid()
"""


def _fresh(body: str, tmp_path: Path) -> str:
    script = tmp_path / "scenario.py"  # a file, so that spawned workers can import its functions
    script.write_text(textwrap.dedent(PRELUDE.format(root=str(ROOT))) + textwrap.dedent(body))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_pool_runs_in_other_processes_when_stderr_has_no_descriptor(tmp_path):
    got = _fresh("""
        from triage.collectors.parallel import Pool
        if __name__ == "__main__":
            real, sys.stderr = sys.stderr, CapturedStderr()
            with Pool(2) as pool:
                pids = set(pool.map(pid, [(i,) for i in range(6)]))
                broken = pool.broken
            print(broken, os.getpid() in pids, len(pids) > 0, type(sys.stderr).__name__)
    """, tmp_path)
    assert got == "False False True CapturedStderr"


def test_large_file_for_the_worker_path_loads_under_a_captured_stderr(tmp_path):
    """Enum names make every chunk go to the msgspec workers (Arrow refuses them)."""
    line = (ROOT / "sample_traces/slow-tokenizer/otlp/triton.jsonl").read_bytes()
    assert b'"kind":2' in line
    path = tmp_path / "enum-kinds.jsonl"
    path.write_bytes(line.replace(b'"kind":2', b'"kind":"SPAN_KIND_SERVER"') * 6)
    got = _fresh(f"""
        from triage.collectors.ingest import ingest_paths
        from triage.collectors.store import Store
        if __name__ == "__main__":
            expected = ingest_paths(Store(), [{str(path)!r}], workers=1)
            real, sys.stderr = sys.stderr, CapturedStderr()
            store = Store()
            res = ingest_paths(store, [{str(path)!r}], workers=2)
            servers = store.scalar("SELECT count(*) FROM spans WHERE kind = 2")
            print(res.spans == expected.spans, res.spans > 0, res.problems.count == expected.problems.count,
                  servers > 0)
    """, tmp_path)
    assert got == "True True True True"


def _pid(_):
    import os

    return os.getpid()


def test_pool_that_never_gets_work_starts_no_process():
    pool = Pool(2)
    assert list(pool.map(_pid, iter(()))) == []
    assert pool._ex is None
    pool.close()
