"""`triage report`: JSON contract (DESIGN.md §8), exit codes, Markdown, --db persistence, each sample's top finding."""
import json
import subprocess
import sys

import pytest

from conftest import CAPTURE, ROOT, SAMPLES
from triage.sample_traces.incidents import INCIDENTS
from triage.cli.main import main


def run_cli(*args):
    out = subprocess.run([sys.executable, "-m", "triage", *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


@pytest.mark.parametrize("name", sorted(n for n in INCIDENTS if n != "healthy"))
def test_each_sample_puts_its_expected_rule_first(name, capsys):
    rc = main(["report", str(SAMPLES / name), "--format", "json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert rep["findings"][0]["rule"] == INCIDENTS[name][0].expected_rule
    assert rep["findings"][0]["severity"] in ("critical", "warning")
    readme = (SAMPLES / name / "README.md").read_text()
    assert f"`{INCIDENTS[name][0].expected_rule}`" in readme


def test_json_report_shape(capsys):
    main(["report", str(SAMPLES / "slow-tokenizer"), "--format", "json"])
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) == {"version", "window", "inputs", "latency", "stages", "stage_sources", "findings"}  # + "budget" with a [budget]
    assert rep["version"] == 1 and rep["window"]["start"].endswith("Z")
    assert {"spans", "traces", "samples", "files", "skipped"} <= set(rep["inputs"])
    for d in rep["latency"].values():
        assert set(d) == {"requests", "p50_ms", "p95_ms", "p99_ms", "error_rate"}
    for st in rep["stages"].values():
        for d in st.values():
            assert set(d) == {"p95_share", "p50_ms", "p95_ms"}
    for f in rep["findings"]:
        assert {"rule", "severity", "title", "summary", "scope", "evidence", "confidence", "remediations"} == set(f)
        for r in f["remediations"]:
            assert {"id", "title", "impact", "feasibility", "risk", "score"} <= set(r)


def test_exit_codes():
    assert run_cli("report", SAMPLES / "slow-tokenizer", "--fail-on", "warning")[0] == 1
    assert run_cli("report", SAMPLES / "slow-tokenizer", "--fail-on", "critical")[0] == 1
    assert run_cli("report", CAPTURE, "--fail-on", "warning")[0] == 1  # the batching window
    assert run_cli("report", CAPTURE, "--fail-on", "critical")[0] == 0
    assert run_cli("report", SAMPLES / "healthy", "--fail-on", "warning")[0] == 0
    rc, _, err = run_cli("report", "/nonexistent/capture")
    assert rc == 2 and "no such file" in err
    rc, _, err = run_cli("report", ROOT / "pyproject.toml")
    assert rc == 2 and "no readable telemetry" in err


def test_markdown_is_pasteable(capsys):
    main(["report", str(SAMPLES / "retry-storm")])
    md = capsys.readouterr().out
    assert md.startswith("## triage report")
    assert "CRITICAL `retry-spiral`" in md and "| route | requests |" in md and "exemplar traces" in md


def test_db_persists_and_reopens(tmp_path, capsys):
    db = tmp_path / "incident.duckdb"
    main(["report", str(SAMPLES / "overload"), "--db", str(db), "--format", "json"])
    first = json.loads(capsys.readouterr().out)
    assert db.exists()
    main(["report", "--db", str(db), "--format", "json"])
    again = json.loads(capsys.readouterr().out)
    assert again["inputs"]["spans"] == first["inputs"]["spans"] > 0
    assert again["latency"] == first["latency"]
    # ingesting the same capture again does not duplicate it
    main(["report", str(SAMPLES / "overload"), "--db", str(db), "--format", "json"])
    third = json.loads(capsys.readouterr().out)
    assert third["inputs"]["spans"] == first["inputs"]["spans"]


def test_constraints_error_names_key_and_line(tmp_path):
    bad = tmp_path / "triage.toml"
    bad.write_text("[slo]\np95_ms = 300\n\n[rules.preprocessing-share]\nshare = 0.2\nshar = 0.3\n")
    rc, _, err = run_cli("report", SAMPLES / "slow-tokenizer", "--constraints", bad)
    assert rc == 2 and "triage.toml:6" in err and "shar" in err


def test_version_and_help():
    assert run_cli("--version")[1].startswith("triage ")
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "replay" in out and "report" in out


def test_preliminary_analysis_arrives_before_the_end(tmp_path):
    """A large capture gets one early look at what is ingested so far, with the fraction read."""
    from triage.sessions.offline import analyze

    seen = []
    final = analyze([CAPTURE], preliminary=lambda a, frac: seen.append(
        (frac, a.store.scalar("SELECT count(*) FROM spans"), [f.rule for f in a.findings])),
        preliminary_after_s=0.0)
    assert len(seen) == 1
    frac, spans, rules = seen[0]
    assert 0 < frac < 1 and 0 < spans < final.ingest.spans
    assert "gpu-underutilized" in rules  # the rules ran on the partial data (no GPU metrics: not evaluated)


def test_rollback_undoes_a_batching_change_too(tmp_path, monkeypatch, capsys):
    """`triage rollback` undoes whatever the ledger entry recorded: a batching change restores the config
    byte for byte (it used to fail with a KeyError, as if every entry were an installed model)."""
    from triage.remediations import batching

    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    mdir = tmp_path / "clf"
    mdir.mkdir()
    cfg = mdir / "config.pbtxt"
    original = 'name: "clf"\nmax_batch_size: 16\ndynamic_batching { max_queue_delay_microseconds: 50000 }\n'
    cfg.write_text(original)
    p = batching.propose(cfg, batching.Measured(arrival_rps=10, avg_batch=1.0, compute_ms=1.0))
    entry = batching.apply(p)
    assert cfg.read_text() != original
    assert main(["rollback", entry["id"]]) == 0
    assert f"restored {cfg}" in capsys.readouterr().out
    assert cfg.read_bytes() == original.encode()
    assert main(["rollback", entry["id"]]) == 2  # once only
    assert "already rolled back" in capsys.readouterr().err


def test_a_deliberate_bad_input_is_a_usage_error(capsys):
    """Errors raised for the user (a bad duration, a missing constraints file) exit 2 with their message."""
    assert main(["live", "--otlp-listen", "off", "--for", "1s", "--window", "soon"]) == 2
    assert capsys.readouterr().err.strip() == "triage: invalid duration 'soon' (e.g. 30s, 15m, 2h)"
    assert main(["report", str(SAMPLES / "healthy"), "--constraints", str(ROOT / "no-such-triage.toml")]) == 2
    err = capsys.readouterr().err
    assert "no-such-triage.toml" in err and "internal error" not in err


@pytest.mark.parametrize("bug", [KeyError("stage"), ValueError("invalid literal for int() with base 10: 'x'")])
def test_an_internal_error_exits_70_with_one_line_and_the_traceback_only_with_debug(bug, monkeypatch, capsys):
    """A bug (any exception not raised deliberately for the user, a ValueError from a conversion included)
    is not a usage error: exit 70 (EX_SOFTWARE), one line naming it, the traceback with --debug."""
    from triage.sessions import offline

    def analyze(*args, **kwargs):
        if isinstance(bug, ValueError):
            int("x")  # a ValueError raised by Python, not by a `raise` of triage's
        raise bug

    monkeypatch.setattr(offline, "analyze", analyze)
    assert main(["report", str(SAMPLES / "healthy")]) == 70
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("triage: internal error") and type(bug).__name__ in err and "--debug" in err
    assert main(["--debug", "report", str(SAMPLES / "healthy")]) == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in analyze" in err
    assert err.splitlines()[-1].startswith(f"triage: internal error (a bug): {type(bug).__name__}")


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    rc, out, _ = run_cli("--version")
    assert rc == 0 and out == f"triage {version('triage')}\n"
