"""Severity and rank follow from the saving on p95 (analyzers/impact.py, docs/impact.md).

The two shapes seen on a real Triton stack, rebuilt with the project's simulator and emitted through the
real OpenTelemetry SDK (sample_traces/generate.py; profiles in sample_traces/incidents.py SCENARIOS):
1. a healthy service (p95 ~8 ms) behind a 1 ms dynamic-batching window: batching-window fired at warning
   while saying "about 0 ms could go";
2. a load ramp where queueing is most of the p95 tail: a 2 ms window was critical and ranked above
   queueing-growth, as its cause.
"""
import dataclasses
import textwrap

import pytest

from triage.analyzers.constraints import Constraints, ConstraintsError, load
from triage.analyzers.engine import relate
from triage.analyzers.finding import Finding
from triage.sessions.offline import analyze
from triage.sample_traces.generate import generate
from triage.sample_traces.incidents import SCENARIOS


def _report(tmp_path, name, **changes):
    inc, seed = SCENARIOS[name]
    inc = dataclasses.replace(inc, **changes) if changes else inc
    return analyze([generate(name, tmp_path, incident=inc, seed=seed)]).report()


def _material(rep):
    return [f for f in rep["findings"] if f["severity"] in ("error", "critical", "warning")]


def test_healthy_service_with_a_1ms_window_has_nothing_material(tmp_path):
    rep = _report(tmp_path, "healthy-1ms-window")
    p95 = rep["latency"]["gateway POST /v1/classify"]["p95_ms"]
    assert 5.0 < p95 < 12.0  # the shape: a fast, healthy service
    assert _material(rep) == []
    [bw] = [f for f in rep["findings"] if f["rule"] == "batching-window"]
    # the rule still says the window is there, with its saving and why it is immaterial
    assert bw["severity"] == "info" and bw["evidence"]["window_ms"] == 1.0
    assert bw["evidence"]["saving_p95_ms"] < 2.0
    assert bw["evidence"]["severity_reason"].startswith("present, immaterial")


def test_ramp_ranks_queueing_first_and_the_small_window_is_immaterial(tmp_path):
    rep = _report(tmp_path, "ramp-2ms-window")
    route = "gateway POST /v1/classify"
    first = rep["findings"][0]
    assert first["rule"] == "queueing-growth" and first["severity"] == "critical"
    assert first["evidence"]["queue_p95_share"] >= 0.5 and first["evidence"]["queue_p95_ms"] >= 50
    assert "likely_caused_by" not in first["evidence"]  # a 2 ms window cannot explain this queue
    [bw] = [f for f in rep["findings"] if f["rule"] == "batching-window"]
    assert bw["severity"] == "info"
    assert bw["evidence"]["saving_p95_ms"] <= bw["evidence"]["window_ms"]
    assert bw["evidence"]["saving_p95_share"] < 0.10
    # one definition: the share is the saving over the scope's p95
    p95 = rep["latency"][route]["p95_ms"]
    for f in rep["findings"]:
        if "saving_p95_ms" in f["evidence"] and f["evidence"]["saving_p95_share"] is not None:
            assert f["evidence"]["saving_p95_share"] == pytest.approx(f["evidence"]["saving_p95_ms"] / p95, abs=1e-3)


def test_a_long_window_at_light_load_is_material(tmp_path):
    """The same light traffic behind a 20 ms window: the timer is most of p95, and the rule says so."""
    rep = _report(tmp_path, "healthy-1ms-window", batch_window_ms=20.0)
    first = rep["findings"][0]
    assert first["rule"] == "batching-window" and first["severity"] == "critical"
    assert first["evidence"]["saving_p95_share"] >= 0.25


def test_the_window_rule_needs_a_load_well_below_capacity(tmp_path):
    """Utilization = batches/s at the quiet rate x measured compute per batch; above max_utilization the
    queue is contention, not the timer, and the rule stays quiet."""
    rep = _report(tmp_path, "healthy-1ms-window", batch_window_ms=20.0)
    [bw] = [f for f in rep["findings"] if f["rule"] == "batching-window"]
    ev = bw["evidence"]
    expected = ev["low_load_rate_rps"] / max(ev["avg_batch_size"], 1.0) * ev["compute_ms_per_batch"] / 1000.0
    assert ev["utilization_at_low_load"] == pytest.approx(expected, rel=0.02)
    assert 0.02 < ev["utilization_at_low_load"] < 0.2  # 20 req/s x ~3.5 ms
    d = tmp_path / "healthy-1ms-window"
    strict = Constraints(rules={"batching-window": {"max_utilization": ev["utilization_at_low_load"] / 2}})
    assert not [f for f in analyze([d], constraints=strict).report()["findings"] if f["rule"] == "batching-window"]


def test_cause_ranks_above_symptom_only_when_it_explains_it():
    def f(rule, ms):
        return Finding(rule=rule, severity="warning", title=rule, summary="", scope={"route": "r"}, impact_ms=ms)

    small = relate([f("queueing-growth", 95.0), f("batching-window", 2.0)])
    assert [x.rule for x in small] == ["queueing-growth", "batching-window"]
    assert "likely_caused_by" not in small[0].evidence
    big = relate([f("queueing-growth", 95.0), f("batching-window", 40.0)])
    assert [x.rule for x in big] == ["batching-window", "queueing-growth"]
    assert big[1].evidence["likely_caused_by"]["rule"] == "batching-window"


def test_slo_that_the_saving_brings_back_is_critical(tmp_path):
    """A 10% saving is a warning, unless it alone brings a missed p95 SLO back."""
    from triage.analyzers.constraints import Constraints
    from triage.analyzers.impact import severity_of

    c = Constraints()
    assert severity_of(12.0, 0.12, 100.0, c)[0] == "warning"
    c.slo["p95_ms"] = 90.0
    assert severity_of(12.0, 0.12, 100.0, c)[0] == "critical"
    assert severity_of(1.0, 0.2, 5.0, c)[0] == "info"  # below the absolute floor


def test_severity_section_is_typed(tmp_path):
    p = tmp_path / "triage.toml"
    p.write_text("[severity]\ncritical_share = 0.3\nwarning_share = 0.05\nmin_saving_ms = 1\n")
    c = load(p)
    assert c.severity["critical_share"] == 0.3 and c.severity["cause_explains_share"] == 0.25
    p.write_text(textwrap.dedent("""\
        [severity]
        critical_share = 0.2
        warning_share = 0.3
        """))
    with pytest.raises(ConstraintsError, match=r"triage.toml:3: severity.warning_share: .*must not exceed"):
        load(p)
    p.write_text("[severity]\nwarning_share = 1.5\n")
    with pytest.raises(ConstraintsError, match="out of range"):
        load(p)
