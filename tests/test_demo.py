"""End to end on a real Triton (nvidia-pytriton's binary): the batch-window incident is found from Triton's
own OpenTelemetry traces, the proposed batching change is applied, the p95 improvement is confirmed with a
confidence interval on the same workload, and the rollback restores the original config."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until
from triage.lab.triton_server import available

pytestmark = pytest.mark.skipif(available() is not None, reason=f"no real Triton here: {available()}")


def _demo(tmp_path, incident, seconds):
    import os

    out = subprocess.run([sys.executable, "-m", "triage", "demo", "--incident", incident, "--auto-remediate",
                          "--load-seconds", str(seconds)], cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "TRIAGE_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_batch_window_demo_loop(tmp_path):
    r = _demo(tmp_path, "batch-window", 10)
    # the gateway's traces and Triton's joined: one request per gateway call
    assert r["traces"]["requests"] == r["before"]["ok"]
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
    assert r["stopped"]["triton_exited"]
    import os

    with pytest.raises(ProcessLookupError):  # the server it started is gone
        os.kill(r["stopped"]["triton_pid"], 0)


def test_slow_tokenizer_demo_finds_preprocessing(tmp_path):
    r = _demo(tmp_path, "slow-tokenizer", 12)
    top = r["findings"][0]
    assert top["rule"] == "preprocessing-share"
    assert top["evidence"]["spans"][0]["name"] == "tokenize" and top["evidence"]["p95_share"] > 0.5
    assert top["evidence"]["input_size_correlation"] > 0.5
    assert r["remediation"]["applied"] is False  # nothing to batch: the report is the answer


def test_batching_proposal_arithmetic_and_exact_rollback(tmp_path, monkeypatch):
    """Without a server: the proposal's arithmetic, the diff, and a byte-identical rollback."""
    from triage.remediations import batching

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


def test_overload_demo_finds_queueing_growth(tmp_path):
    r = _demo(tmp_path, "overload", 20)
    top = r["findings"][0]
    if top["rule"] == "queueing-growth":
        assert top["evidence"]["queue_ms_high_rate"] > 5 * top["evidence"]["queue_ms_low_rate"]
    else:  # the overload's timeouts made the gateway retry: the spiral is named first, as the cause
        assert top["rule"] == "retry-spiral", top
        assert top["evidence"]["retries"] > 0 and top["evidence"]["amplification"] >= 1.2


def test_interactive_demo_stack_feeds_the_live_session():
    """What `triage demo` opens the TUI on: traces from the gateway and Triton, metrics through a Prometheus
    scraping Triton; all of it stops on exit."""
    import os

    from triage.analyzers.constraints import Constraints
    from triage.sessions.live import LiveSession
    from triage.lab.demo import stack
    from triage.lab.prometheus_server import binary

    session = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=300).start()
    try:
        with stack("batch-window", session, load_s=60) as s:
            pids = [s["triton"].proc.pid] + ([s["prometheus"].proc.pid] if s["prometheus"] else [])
            seen = {}

            def analysed():
                seen["snap"] = snap = session.refresh()
                fired = [f["rule"] for f in snap.report["findings"] if f["severity"] != "info"]
                return fired and (snap.report["inputs"]["samples"] > 0 or not binary()) and fired

            # traces settle 10 s after their last span; a slow machine needs more
            fired = wait_until(analysed, 50, "a finding (and Prometheus samples) from the demo stack", interval=3)
            snap = seen["snap"]
    finally:
        session.stop()
    assert snap.report["inputs"]["spans"] > 0
    assert "gateway POST /v1/classify" in snap.report["latency"]
    if binary():
        assert snap.status["prometheus"] == "ok"
        assert snap.report["inputs"]["samples"] > 0
    assert fired and fired[0] == "batching-window" == snap.report["findings"][0]["rule"]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_loadgen_replays_the_captured_mix_and_stays_on_loopback():
    from conftest import SAMPLES, analysis_of
    from triage.analyzers.requests import input_mix
    from triage.lab import loadgen

    mix = input_mix(analysis_of(str(SAMPLES / "slow-tokenizer")).store)
    assert {s for s, _ in mix} == {32, 64, 128, 512, 2048}
    counts = dict(mix)
    assert counts[32] > counts[2048]  # the sample draws 32-token inputs more often than 2048-token ones
    with pytest.raises(ValueError, match="loopback"):
        loadgen.run("http://example.com:8000", "clf", loadgen.Workload(duration_s=0.1))
