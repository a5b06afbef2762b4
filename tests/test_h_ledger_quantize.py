"""Quantize works on any ONNX model: verification shapes come from the model's own input spec (fixed
dimensions kept, dynamic ones varied, the capture's size mix on a dynamic non-batch axis) and inputs from
its dtypes; a model file inside <repo>/<model>/<version>/ is that Triton model (issue 12)."""
import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is in the test extra (pip install torch==2.13.0)")
pytest.importorskip("onnxruntime")

from h_ledger_models import models_master  # noqa: E402,F401 (a fixture)
from triage.remediations import ledger  # noqa: E402
from triage.remediations.quantize import RemediationError, plan, run  # noqa: E402
from triage.cli.main import main  # noqa: E402


@pytest.fixture
def models(models_master, tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    return shutil.copytree(models_master, tmp_path / "repo")


def test_tabular_mlp_is_verified_on_its_own_input_width_and_installed(models):
    """It used to fail: 'the original model fails on shapes [1, 8], [16, 128], [3, 57], [1, 1]'."""
    p = plan(str(models / "mlp"), "dynamic")
    assert p.shapes and all(s[1] == 32 for s in p.shapes)
    assert sorted({s[0] for s in p.shapes}) == [1, 3, 4, 16]  # only the dynamic batch axis varies
    r = run(p, iters=20)
    assert r["applied"], r.get("reason")
    assert r["verification"]["shape_failures"] == []
    assert (models / "mlp" / "2" / "model.onnx").exists()


def test_cnn_with_a_fixed_image_size_keeps_it(models):
    p = plan(str(models / "cnn"), "dynamic", guardrails={"min_top1_agreement": 0.9})  # random weights: near ties
    assert all(s[1:] == [3, 32, 32] for s in p.shapes)
    r = run(p, iters=20)
    assert r["applied"], r.get("reason")
    assert r["verification"]["before"]["batch_shape"] == [8, 3, 32, 32]
    assert (models / "cnn" / "2" / "model.onnx").exists()


def test_text_model_varies_batch_and_length_and_the_capture_mix_maps_onto_the_length(demo_repo_master, models):
    from triage.remediations.onnx_modes import input_spec, random_feeds, verification_axes

    p = plan(str(demo_repo_master / "clf"), "dynamic")
    assert p.shapes == [[1, 8], [4, 32], [16, 128], [3, 57], [1, 1]]
    assert plan(str(demo_repo_master / "clf"), "dynamic", sizes=[5, 40]).shapes == [[1, 5], [1, 40]]
    spec = input_spec(demo_repo_master / "clf" / "1" / "model.onnx")
    assert spec[0].high == 2000  # token ids within the embedding's rows
    ids = random_feeds(spec, verification_axes(spec), seed=0)
    assert all(f[spec[0].name].max() < 2000 and f[spec[0].name].dtype == np.int64 for f in ids)
    # an input-size mix with no dynamic non-batch axis to land on: the model's own shape, and a note saying so
    q = plan(str(models / "mlp"), "dynamic", sizes=[5, 40])
    assert q.shapes == plan(str(models / "mlp"), "dynamic").shapes and any("no dynamic axis" in n for n in q.notes)


def test_a_model_file_in_a_version_folder_becomes_the_next_version(demo_repo_master, tmp_path, monkeypatch):
    """It used to write model.dynamic.onnx into version folder 1, where Triton never loads it. (No
    config.pbtxt: Triton auto-completes an ONNX model's config, so the layout alone makes it a model.)"""
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo_master / "clf" / "1", repo / "clf" / "1")
    assert main(["quantize", str(repo / "clf" / "1" / "model.onnx"), "--repo", str(repo)]) == 0
    assert (repo / "clf" / "2" / "model.onnx").exists()
    assert sorted(p.name for p in (repo / "clf" / "1").iterdir()) == ["model.onnx"]
    e = ledger.entries()[-1]
    assert e["created"] == str((repo / "clf" / "2").resolve())


def test_repo_with_a_model_outside_it_is_a_usage_error(models, tmp_path, capsys):
    lone = tmp_path / "elsewhere" / "model.onnx"
    lone.parent.mkdir()
    shutil.copyfile(models / "mlp" / "1" / "model.onnx", lone)
    assert main(["quantize", str(lone), "--repo", str(models)]) == 2
    err = capsys.readouterr().err
    assert "outside --repo" in err and str(lone) in err
    assert sorted(p.name for p in lone.parent.iterdir()) == ["model.onnx"]
    with pytest.raises(RemediationError, match="not a model of --repo"):
        plan(str(models / "mlp" / "1"), "dynamic", repo=str(models))


def test_with_repo_a_model_name_means_the_repositorys_model(models, tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    (elsewhere / "mlp" / "1").mkdir(parents=True)  # a same-named folder where the command runs
    monkeypatch.chdir(elsewhere)
    p = plan("mlp", "dynamic", repo=str(models))
    assert p.triton_model_dir == str(models / "mlp") and p.new_version == 2
    with pytest.raises(RemediationError, match="no such model in --repo"):
        plan("nosuch", "dynamic", repo=str(models))
