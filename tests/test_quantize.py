"""One-key model remediation on the demo model (trained and exported by triage.lab.model): each
mode, guardrail failure, a baked-shape export, an interrupted apply, and byte-identical rollback."""
import json
import shutil

import pytest

pytest.importorskip("torch", reason="torch is in the test extra (pip install torch==2.13.0)")
pytest.importorskip("onnxruntime")

from triage.remediations import atomic, ledger  # noqa: E402
from triage.remediations.quantize import RemediationError, plan, rollback, run  # noqa: E402
from conftest import model_files  # noqa: E402
from triage.cli.main import main  # noqa: E402


@pytest.fixture
def repo(demo_repo_master, tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    dst = tmp_path / "repo"
    shutil.copytree(demo_repo_master, dst)
    return dst


@pytest.mark.parametrize("mode", ["dynamic", "static", "fp16"])
def test_each_mode_is_verified_and_installed_as_a_new_version(repo, mode):
    before = model_files(repo)
    p = plan(str(repo / "clf"), mode, calib=str(repo / "calib.npz"))
    r = run(p, iters=60)
    v = r["verification"]
    assert r["applied"], r.get("reason")
    assert (repo / "clf" / "2" / "model.onnx").exists()
    assert {k: x for k, x in model_files(repo).items() if not k.startswith("2/")} == before  # version 1 untouched
    assert v["top1_agreement"] >= 0.99 and v["shape_failures"] == []
    assert v["after"]["size_bytes"] < v["before"]["size_bytes"]
    assert v["before"]["p95_ms"] > 0 and v["after"]["throughput_per_s"] > 0
    e = ledger.find(r["ledger_id"])
    assert e["created_digest"] == atomic.tree_digest(repo / "clf" / "2")
    assert e["before"]["p95_ms"] == v["before"]["p95_ms"]


def test_rollback_restores_byte_identical_files(repo, capsys, tmp_path):
    before = model_files(repo)
    db = tmp_path / "ledger.duckdb"
    assert main(["--db", str(db), "quantize", str(repo / "clf"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert model_files(repo) != before
    assert main(["--db", str(db), "rollback", out["ledger_id"]]) == 0
    from triage.collectors.store import Store

    assert [r[0] for r in Store(db).query("SELECT action FROM remediations ORDER BY ts")] == [
        "quantize", "rollback"]
    assert model_files(repo) == before
    assert main(["rollback", out["ledger_id"]]) == 2  # once only
    assert [e["action"] for e in ledger.entries(repo / "clf" / ledger.LEDGER_NAME)] == ["quantize", "rollback"]


def test_guardrail_failure_is_reported_and_not_applied(repo):
    p = plan(str(repo / "clf"), "dynamic", guardrails={"min_top1_agreement": 0.99, "max_abs_diff": 1e-6})
    r = run(p, iters=20)
    assert not r["applied"] and "max abs difference" in r["reason"]
    assert not (repo / "clf" / "2").exists() and ledger.entries() == []


def test_export_that_bakes_a_shape_is_caught(repo):
    p = plan("triage.lab.model:baked_classifier", "dynamic")
    r = run(p, apply=False)
    assert not r["applied"] and r["reason"] == "the export baked a shape"
    failing = [f["shape"] for f in r["verification"]["shape_failures"]]
    assert failing and all(s[1] != 16 for s in failing)


def test_reexport_from_torchscript_then_quantize(repo):
    p = plan(str(repo / "classifier.pt"), "dynamic")
    r = run(p, iters=20)
    assert r["applied"] and (repo / "classifier.dynamic.onnx").exists()
    rollback(r["ledger_id"])
    assert not (repo / "classifier.dynamic.onnx").exists() and (repo / "classifier.pt").exists()


def test_interrupted_apply_leaves_the_original_intact(repo, monkeypatch):
    before = model_files(repo)

    def crash(staging, dst):
        raise KeyboardInterrupt("power cut while installing")

    monkeypatch.setattr(atomic, "install_dir_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        run(plan(str(repo / "clf"), "dynamic"), iters=10)
    assert model_files(repo) == before
    assert not any(p.name.startswith(".triage-staging") for p in (repo / "clf").iterdir())
    assert ledger.entries() == []


def test_refuses_to_overwrite_and_rejects_bad_input(repo):
    lone = repo / "lone.onnx"
    shutil.copyfile(repo / "clf" / "1" / "model.onnx", lone)
    (repo / "lone.dynamic.onnx").write_bytes(b"someone else's file")
    with pytest.raises(RemediationError, match="never overwrites"):
        plan(str(lone), "dynamic")
    with pytest.raises(FileExistsError):
        atomic.copy_file_atomic(lone, repo / "lone.dynamic.onnx")
    assert (repo / "lone.dynamic.onnx").read_bytes() == b"someone else's file"
    with pytest.raises(RemediationError, match="not an ONNX file"):
        plan(str(repo / "calib.npz"), "dynamic")
    assert main(["quantize", str(repo / "nope.onnx")]) == 2
