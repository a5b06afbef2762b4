"""End to end on a real Triton (nvidia-pytriton's binary): the batch-window incident is found from Triton's
own OpenTelemetry traces, the proposed batching change is applied, the p95 improvement is confirmed with a
confidence interval on the same workload, and the rollback restores the original config."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from remediations.triton_server import available

pytestmark = pytest.mark.skipif(available() is not None, reason=f"no real Triton here: {available()}")


def test_batch_window_demo_loop(tmp_path):
    env = {"TRIAGE_HOME": str(tmp_path / "home")}
    import os

    out = subprocess.run([sys.executable, "-m", "tui.cli", "demo", "--incident", "batch-window", "--auto-remediate",
                          "--load-seconds", "8"], cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert r["findings"][0]["rule"] == "batching-window"
    assert r["findings"][0]["evidence"]["window_ms"] == 50.0
    rem = r["remediation"]
    assert rem["applied"] and rem["changes"]["max_queue_delay_microseconds"][0] == 50000
    assert rem["changes"]["max_queue_delay_microseconds"][1] < 50000
    assert "max_queue_delay_microseconds: 50000" in rem["diff"]
    before, after = r["before"], r["after"]
    assert before["ok"] > 50 and after["ok"] > 50 and before["error_rate"] == after["error_rate"] == 0
    assert before["p95_ms"] / after["p95_ms"] >= 2.0
    assert r["comparison"]["verdict"] == "improved" and r["comparison"]["change"]["p95"]["ci_ms"][1] < 0
    assert rem["config_restored"] is True and rem["rolled_back"]
    leftovers = subprocess.run(["pgrep", "-f", "triage-triton-"], capture_output=True, text=True).stdout.strip()
    assert leftovers == "", "a tritonserver started by the demo is still running"


def test_batching_proposal_arithmetic_and_exact_rollback(tmp_path, monkeypatch):
    """Without a server: the proposal's arithmetic, the diff, and a byte-identical rollback."""
    from remediations import batching

    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    mdir = tmp_path / "clf"
    mdir.mkdir()
    cfg = mdir / "config.pbtxt"
    original = ('name: "clf"\nbackend: "python"\nmax_batch_size: 16\n'
                'dynamic_batching { max_queue_delay_microseconds: 50000 }\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n')
    cfg.write_text(original)
    # low traffic: nothing to batch → no window
    p = batching.propose(cfg, batching.Measured(arrival_rps=10, avg_batch=1.0, compute_ms=1.0))
    assert p.changes["max_queue_delay_microseconds"] == [50000, 0] and "λ·W = 0.50" in " ".join(p.arithmetic)
    # heavy traffic: batches worth gathering, and a second instance
    q = batching.propose(cfg, batching.Measured(arrival_rps=400, avg_batch=1.0, compute_ms=20.0))
    best = q.changes["preferred_batch_size"][1][0]
    assert best == 9 and 0 < q.changes["max_queue_delay_microseconds"][1] <= 20000
    assert q.changes["instances"] == [1, 2]
    entry = batching.apply(p)
    assert "max_queue_delay_microseconds: 50000" not in cfg.read_text()
    batching.rollback(entry["id"], ledger_path=mdir / ".triage-ledger.jsonl")
    assert cfg.read_bytes() == original.encode()
    assert not list(mdir.glob("config.pbtxt.triage-backup-*"))
