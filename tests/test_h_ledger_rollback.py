"""Rollback acts only on what triage installed (issue 12): absolute resolved paths with device, inode and
digest; only inside the entry's root; no symbolic links on the path; the global copy, the root's own
ledger and the filesystem must agree; bad ledger lines are skipped and reported, never fatal; entries of
the old format (paths relative to the folder quantize ran in) are refused with what to do instead.
Every forged-entry test creates a real victim in tmp and checks it survives untouched."""
import json
import os
import shutil

import orjson
import pytest

pytest.importorskip("torch", reason="torch is in the test extra (pip install torch==2.13.0)")
pytest.importorskip("onnxruntime")

from h_ledger_models import models_master  # noqa: E402,F401 (a fixture)
from triage.remediations import atomic, ledger  # noqa: E402
from triage.cli.main import main  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def installed(demo_repo_master, tmp_path, home, monkeypatch, capsys):
    """``triage quantize repo/mlp`` run from tmp/work with a relative path, as in the report: (work, id).
    The demo's text model, renamed ``mlp`` here, so this reproduces on main as reported."""
    work = tmp_path / "work"
    shutil.copytree(demo_repo_master / "clf", work / "repo" / "mlp")
    monkeypatch.chdir(work)
    assert main(["quantize", "repo/mlp", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (work / "repo" / "mlp" / "2" / "model.onnx").exists()
    return work, out["ledger_id"]


def _victim(tmp_path):
    v = tmp_path / "victim"
    (v / "data").mkdir(parents=True)
    (v / "passwd").write_text("root:x:0:0\n")
    (v / "data" / "keep").write_text("precious\n")
    return v, atomic.tree_digest(v)


def _forge(home, entry, *more_ledgers):
    for path in (home / "ledger.jsonl", *more_ledgers):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(orjson.dumps({"ts": "2026-01-01T00:00:00+00:00", "who": "mallory@h", **entry}) + b"\n")


def test_rollback_from_another_working_folder(installed, monkeypatch, capsys):
    """It said 'demo-repo/clf/2 is gone already' (it was not): the ledger held a relative path."""
    work, eid = installed
    e = ledger.find(eid)
    assert e["created"] == str((work / "repo" / "mlp" / "2").resolve()) and os.path.isabs(e["root"])
    monkeypatch.chdir("/")
    assert main(["rollback", eid]) == 0, capsys.readouterr().err
    assert not (work / "repo" / "mlp" / "2").exists() and (work / "repo" / "mlp" / "1" / "model.onnx").exists()


def test_rollback_beside_a_copy_removes_the_original_and_leaves_the_copy(installed, tmp_path, monkeypatch, capsys):
    """It deleted the copy's mlp/2, marked the real install rolled back, and that could never be undone."""
    work, eid = installed
    other = tmp_path / "other"
    shutil.copytree(work / "repo", other / "repo")
    copy_before = atomic.tree_digest(other)
    monkeypatch.chdir(other)
    assert main(["rollback", eid]) == 0, capsys.readouterr().err
    assert atomic.tree_digest(other) == copy_before
    assert not (work / "repo" / "mlp" / "2").exists()
    assert main(["rollback", eid]) == 2 and "already rolled back" in capsys.readouterr().err


def test_symlink_swapped_in_for_the_model_folder_is_refused(installed, tmp_path, capsys):
    """It deleted the 2/ of the tree the link pointed to."""
    work, eid = installed
    moved, other = tmp_path / "moved" / "mlp", tmp_path / "other" / "mlp"
    shutil.move(str(work / "repo" / "mlp"), moved)
    shutil.copytree(moved, other)  # another tree holding the same model, version 2 included
    other_before = atomic.tree_digest(other)
    (work / "repo" / "mlp").symlink_to(other, target_is_directory=True)
    assert main(["rollback", eid]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert atomic.tree_digest(other) == other_before and (moved / "2" / "model.onnx").exists()


def test_an_installed_folder_replaced_by_a_copy_is_refused(installed, capsys):
    work, eid = installed
    v2 = work / "repo" / "mlp" / "2"
    shutil.copytree(v2, v2.with_name("tmp"))
    shutil.rmtree(v2)
    v2.with_name("tmp").rename(v2)  # same path, same bytes, not the folder triage made
    assert main(["rollback", eid]) == 2
    assert "not the installed dir" in capsys.readouterr().err and v2.exists()


def test_global_copy_must_match_the_root_ledger(installed, home, capsys):
    work, eid = installed
    glob = home / "ledger.jsonl"
    lines = [orjson.loads(x) for x in glob.read_bytes().splitlines()]
    for x in lines:
        if x["id"] == eid:
            x["guardrails"] = {"min_top1_agreement": 0.0}  # any difference at all
    glob.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    assert main(["rollback", eid]) == 2
    assert "differs" in capsys.readouterr().err and (work / "repo" / "mlp" / "2").exists()
    local = work / "repo" / "mlp" / ledger.LEDGER_NAME
    local.unlink()  # no local ledger at all: triage made no change there
    glob.write_bytes(b"".join(orjson.dumps({**x, "guardrails": ledger.find(eid, None)["guardrails"]}) + b"\n"
                              for x in lines))
    assert main(["rollback", eid]) == 2
    assert "holds no" in capsys.readouterr().err and (work / "repo" / "mlp" / "2").exists()


@pytest.mark.parametrize("kind", ["absolute", "relative", "new-format", "outside-its-root", "link-in-root"])
def test_forged_quantize_entries_touch_nothing(kind, tmp_path, home, monkeypatch, capsys):
    """A forged entry made rollback rmtree a folder outside any repository or unlink ../../victim/passwd
    (the only guard was a digest the same ledger supplied); it also wrote a ledger into the victim folder."""
    victim, before = _victim(tmp_path)
    attacker = tmp_path / "attacker"
    (attacker / "a" / "b").mkdir(parents=True)
    e = {"id": "forged000001", "action": "quantize"}
    extra = []
    if kind == "absolute":
        e.update(created=str(victim / "data"), created_digest=atomic.tree_digest(victim / "data"))
    elif kind == "relative":
        monkeypatch.chdir(attacker / "a" / "b")
        e.update(created="../../../victim/passwd", created_digest=atomic.tree_digest(victim / "passwd"))
    else:
        root = victim if kind == "new-format" else attacker
        created = victim / "data"
        if kind == "link-in-root":
            created = attacker / "7"
            created.symlink_to(victim / "data", target_is_directory=True)
        e.update(format=ledger.FORMAT, root=str(root), root_id=ledger.identity(root), created=str(created),
                 created_kind="dir", created_id=ledger.identity(victim / "data"),
                 created_digest=atomic.tree_digest(victim / "data"))
        if kind != "new-format":
            extra = [attacker / ledger.LEDGER_NAME]  # the attacker's own folder agrees with the global copy
    _forge(home, e, *extra)
    assert main(["rollback", "forged000001"]) == 2
    assert "triage rollback:" in capsys.readouterr().err
    assert atomic.tree_digest(victim) == before
    assert not (victim / ledger.LEDGER_NAME).exists() and not (victim / "data" / ledger.LEDGER_NAME).exists()


@pytest.mark.parametrize("fmt", ["old", "new"])
def test_forged_batching_entry_overwrites_nothing_and_keeps_the_backup(fmt, tmp_path, home, capsys):
    """It overwrote an arbitrary file with the attacker's 'backup' and then deleted the backup."""
    victim, before = _victim(tmp_path)
    evil = tmp_path / "attacker" / "config.pbtxt.triage-backup-0123abcd"
    evil.parent.mkdir()
    evil.write_text("mallory::0:0\n")
    e = {"id": "forged000002", "action": "batching", "model": "x", "config": str(victim / "passwd"),
         "backup": str(evil), "before_sha256": atomic.sha256(evil), "after_sha256": atomic.sha256(victim / "passwd")}
    if fmt == "new":
        e.update(format=ledger.FORMAT, root=str(victim), root_id=ledger.identity(victim),
                 config_id=ledger.identity(victim / "passwd"), backup_id=ledger.identity(evil))
    _forge(home, e)
    assert main(["rollback", "forged000002"]) == 2
    assert atomic.tree_digest(victim) == before and evil.read_text() == "mallory::0:0\n"
    assert not (victim / ledger.LEDGER_NAME).exists()


def test_lines_that_are_not_entries_are_skipped_and_reported(installed, home, capsys):
    """Valid JSON that is not an object, or has no "id", crashed every rollback."""
    work, eid = installed
    with open(home / "ledger.jsonl", "ab") as fh:
        fh.write(b'[1,2]\n42\nnull\n{"action": "quantize"}\n{"id": 7, "action": "x"}\n{"id": "torn')
    assert main(["rollback", "nosuchid0000"]) == 2
    err = capsys.readouterr().err
    assert "no ledger entry 'nosuchid0000'" in err and "6 unreadable" in err
    assert main(["rollback", eid]) == 0
    err = capsys.readouterr().err
    for n in range(2, 8):
        assert f"line {n}:" in err
    assert not (work / "repo" / "mlp" / "2").exists()
    assert ledger.entries()[-1]["action"] == "rollback"


def test_old_format_entries_are_refused_with_what_to_do(models_master, tmp_path, home, monkeypatch, capsys):
    """An entry from before this format: relative path, no root. Nothing says which folder it meant."""
    work = tmp_path / "work"
    shutil.copytree(models_master, work / "repo")
    v2 = work / "repo" / "mlp" / "2"
    shutil.copytree(work / "repo" / "mlp" / "1", v2)
    e = {"id": "oldformat001", "action": "quantize", "created": "repo/mlp/2",
         "created_digest": atomic.tree_digest(v2)}
    _forge(home, e, work / "repo" / "mlp" / ledger.LEDGER_NAME)
    monkeypatch.chdir(work)
    assert main(["rollback", "oldformat001"]) == 2
    err = capsys.readouterr().err
    assert "older triage" in err and "repo/mlp/2" in err and "by hand" in err
    assert v2.exists()


def test_global_ledger_honours_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TRIAGE_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert ledger.global_ledger() == tmp_path / "state" / "triage" / "ledger.jsonl"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert ledger.global_ledger() == tmp_path / "h" / ".local" / "state" / "triage" / "ledger.jsonl"
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "t"))
    assert ledger.global_ledger() == tmp_path / "t" / "ledger.jsonl"


def test_a_folder_swapped_for_a_link_after_the_checks_is_not_followed(installed, tmp_path, monkeypatch, capsys):
    """The removal works relative to a descriptor of the checked root opened without following links: a swap
    between the checks and the removal (a race) is refused, not followed."""
    work, eid = installed
    mdir = work / "repo" / "mlp"
    other = tmp_path / "other" / "mlp"
    shutil.copytree(mdir, other)
    other_before = atomic.tree_digest(other)
    real_open_root = ledger.open_root

    def swap_then_open(root, want):
        root.rename(root.with_name("moved"))
        root.symlink_to(other, target_is_directory=True)
        return real_open_root(root, want)

    monkeypatch.setattr(ledger, "open_root", swap_then_open)
    assert main(["rollback", eid]) == 2
    assert "changed while rolling back" in capsys.readouterr().err
    assert atomic.tree_digest(other) == other_before and (work / "repo" / "moved" / "2").exists()


def test_an_unreadable_ledger_is_reported_not_a_crash(tmp_path, home, capsys):
    assert main(["rollback", "abc", "--ledger", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "no ledger entry 'abc'" in err
