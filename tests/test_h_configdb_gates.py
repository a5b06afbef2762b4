"""A rule that raises cannot pass a gate: its finding has severity `error`, comes first with the rule id and
the error, in JSON, Markdown and the TUI's styles, and `report` exits 1 for it whatever --fail-on says (issue 12)."""
import json

import pytest

from triage.analyzers.rule import Rule
from conftest import SAMPLES
from triage.cli.main import main


@pytest.fixture
def broken_slo_burn(monkeypatch):
    run = Rule.run

    def failing(self, ctx):
        if self.id == "slo-burn":
            raise ZeroDivisionError("boom in slo-burn")
        return run(self, ctx)

    monkeypatch.setattr(Rule, "run", failing)


@pytest.mark.parametrize("gate", [[], ["--fail-on", "critical"], ["--fail-on", "warning"], ["--strict"]])
def test_a_broken_rule_fails_report_whatever_the_gate(broken_slo_burn, capsys, gate):
    rc = main(["report", str(SAMPLES / "healthy"), "--format", "json", *gate])
    out = capsys.readouterr()
    rep = json.loads(out.out)
    first = rep["findings"][0]
    assert first["rule"] == "slo-burn" and first["severity"] == "error"
    assert "ZeroDivisionError" in first["summary"] and "boom in slo-burn" in first["summary"]
    assert rc == 1
    assert "slo-burn" in out.err


def test_without_a_broken_rule_the_same_report_passes(capsys):
    assert main(["report", str(SAMPLES / "healthy"), "--format", "json"]) == 0
    assert all(f["severity"] != "error" for f in json.loads(capsys.readouterr().out)["findings"])


def test_markdown_shows_the_broken_rule_first(broken_slo_burn, capsys):
    main(["report", str(SAMPLES / "retry-storm")])
    md = capsys.readouterr().out
    findings = md.split("### Findings\n", 1)[1].split("\n### ", 1)[0]
    first = findings.splitlines()[0]
    assert first.startswith("1. ") and "ERROR `slo-burn`" in first and "boom in slo-burn" in first
    assert "CRITICAL `retry-spiral`" in findings  # the other rules' findings are still there


def test_error_is_ranked_and_styled_above_critical():
    from triage.analyzers.finding import Finding
    from triage.analyzers.report import exit_code, worst_severity
    from triage.tui.format import SEVERITY_STYLE, badge

    err = Finding("r1", "error", "t", "s", evaluated=False)
    crit = Finding("r2", "critical", "t", "s", impact_ms=1e9)
    assert sorted([crit, err], key=Finding.sort_key)[0] is err
    assert "error" in SEVERITY_STYLE and "ERROR" in badge("error")
    rep = {"findings": [crit.to_dict(), err.to_dict()]}
    assert worst_severity(rep) == "error"
    assert exit_code(rep, None) == 1  # `live --for` takes its exit code from the same function
