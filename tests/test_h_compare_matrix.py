"""The scenario matrix (issue 14): incidents recorded from the project's own real stack (a real Triton, the
OpenTelemetry gateway, the load generator; ``python -m benchmarks.capture_matrix``), each with the first finding
its physics calls for, written in its README and scenario.json before triage looked at it. Each incident capture
must get that finding first at warning or above; each healthy one nothing at warning or above."""
import json
from pathlib import Path

import pytest

from triage.sessions.offline import analyze

MATRIX = Path(__file__).parent / "fixtures" / "matrix"
MATERIAL = ("error", "critical", "warning")
def _scenarios():
    out = []
    for folder in sorted(p for p in MATRIX.iterdir() if (p / "scenario.json").is_file()):
        out.append(pytest.param(folder, id=folder.name))
    return out


def test_the_matrix_is_large_enough_and_each_capture_is_complete():
    folders = [p for p in MATRIX.iterdir() if (p / "scenario.json").is_file()]
    assert len(folders) >= 20
    for f in folders:
        sc = json.loads((f / "scenario.json").read_text())
        assert sc["name"] == f.name and "expect" in sc and sc["why"]
        for name in ("traces.otlp.jsonl.gz", "metrics.prom.gz", "config.pbtxt", "triage.toml", "README.md"):
            assert (f / name).is_file(), f / name
        readme = (f / "README.md").read_text()
        assert "**Expected first finding:**" in readme and (sc["expect"] or "(none") in readme
    assert sum(p.stat().st_size for p in MATRIX.rglob("*") if p.is_file()) < 25 * 2 ** 20


@pytest.mark.parametrize("folder", _scenarios())
def test_first_finding(folder):
    sc = json.loads((folder / "scenario.json").read_text())
    a = analyze([folder])
    report = a.report()
    # the capture is what the scenario says it is: every request the load generator got an answer for is a
    # trace, with Triton's spans joined to the gateway's
    assert report["inputs"]["problems"]["count"] == 0
    assert report["inputs"]["samples"] > 0
    n_requests = a.store.scalar("SELECT count(*) FROM requests")
    assert n_requests >= sc["measured"]["client"]["ok"]
    assert a.store.scalar("SELECT count(*) FROM requests WHERE model = 'clf'") >= 0.99 * n_requests
    material = [f for f in a.findings if f.severity in MATERIAL]
    shown = [(f.severity, f.rule, f.summary) for f in material[:3]]
    if sc["expect"] and material:
        assert material[0].rule == sc["expect"], shown
    elif sc["expect"]:
        # a cause on a route that meets its p95 SLO with room to spare is info (docs/impact.md): it must still be
        # the first finding, and say why it is not material
        first = next(f for f in a.findings if f.evaluated)
        assert first.rule == sc["expect"], [(f.severity, f.rule) for f in a.findings[:3]]
        assert "meets the p95 SLO" in first.evidence["severity_reason"]
    else:
        assert not material, shown


def test_each_capture_is_a_scenario_of_the_tool_with_the_same_expectation():
    """The fixtures and the tool that records them say the same thing (re-recording keeps the expectations)."""
    from benchmarks.capture_matrix import scenarios

    tool = {s.name: s for s in scenarios()}
    assert len(tool) == len(scenarios()) >= 20
    for folder in (p for p in MATRIX.iterdir() if (p / "scenario.json").is_file()):
        sc = json.loads((folder / "scenario.json").read_text())
        assert folder.name in tool and tool[folder.name].expect == sc["expect"], folder.name
        # the config Triton ran is the scenario's
        assert (f"max_queue_delay_microseconds: {tool[folder.name].window_us}"
                in (folder / "config.pbtxt").read_text()), folder.name
