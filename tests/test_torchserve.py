"""TorchServe behind the same batching interface, against a real TorchServe started here on loopback."""
import pytest

from triage.lab.torchserve import available

pytestmark = pytest.mark.skipif(available() is not None, reason=f"no real TorchServe here: {available()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_repo_master):
    from triage.lab.torchserve import TorchServe

    root = tmp_path_factory.mktemp("ts")
    model = demo_repo_master / "clf" / "1" / "model.onnx"  # only read by the archiver
    ts = TorchServe(root / "work").start()
    try:
        mar = ts.archive(model)
        ts.register(mar, batch_size=8, max_batch_delay_ms=50)
        yield ts, mar, root
    finally:
        ts.stop()
    import os

    with pytest.raises(ProcessLookupError):  # the launcher, the Java frontend and the workers are all gone
        os.killpg(ts.proc.pid, 0)


def test_torchserve_batching_window_proposal_apply_remeasure_rollback(served, monkeypatch):
    from triage.analyzers.compare import compare
    from triage.analyzers.constraints import Constraints
    from triage.remediations import ledger
    from triage.lab import loadgen
    from triage.remediations.batching import Measured
    from triage.remediations.torchserve import TorchServeBatching

    ts, mar, root = served
    monkeypatch.setenv("TRIAGE_HOME", str(root / "home"))
    target = TorchServeBatching(ts, "clf", mar)
    assert target.current() == {"max_batch_size": 8, "window_us": 50_000, "instances": 1}
    w = loadgen.Workload(rate_rps=10, duration_s=6, seed=3, sizes=[(16, 1), (32, 1)], target="torchserve")
    before = loadgen.run(ts.url, "clf", w)
    assert before.ok > 30 and before.summary()["p50_ms"] > 45  # every request waits out the 50 ms window
    proposal = target.propose(Measured(arrival_rps=before.sent / before.seconds, avg_batch=1.0, compute_ms=2.0))
    assert proposal["after"]["max_batch_delay_ms"] == 0 and "λ·W" in " ".join(proposal["arithmetic"])
    entry = target.apply(proposal, root)
    assert ts.describe("clf")["max_batch_delay_ms"] == 0
    after = loadgen.run(ts.url, "clf", w)
    res = compare({"clf": before.latencies_ms}, {"clf": after.latencies_ms}, Constraints())["routes"]["clf"]
    assert res["verdict"] == "improved" and before.summary()["p95_ms"] / after.summary()["p95_ms"] >= 2
    target.rollback(entry, root)
    assert ts.describe("clf") == {"batch_size": 8, "max_batch_delay_ms": 50, "workers": 1}
    assert [e["action"] for e in ledger.entries(root / ledger.LEDGER_NAME)] == ["batching-torchserve", "rollback"]
