"""The rules added for analyzer depth: each with a positive and a negative fixture (simulated incidents
emitted through the OpenTelemetry SDK, or the bundled samples), and 'not evaluated' without its data."""
import dataclasses

import orjson
import pytest

from triage.analyzers.constraints import Constraints
from triage.sessions.offline import analyze
from conftest import CAPTURE, SAMPLES, analysis_of
from triage.sample_traces.generate import generate
from triage.sample_traces.incidents import INCIDENTS

HEALTHY = INCIDENTS["healthy"][0]


def run(tmp_path, seed=3, constraints=None, **changes):
    inc = dataclasses.replace(HEALTHY, name=changes.pop("name", "x"), duration_s=changes.pop("duration_s", 45), **changes)
    return analyze([generate(inc.name, tmp_path, incident=inc, seed=seed)], constraints=constraints).report()


def fired(rep, rule):
    return [f for f in rep["findings"] if f["rule"] == rule and f["severity"] in ("warning", "critical")]


def not_evaluated(rep, rule):
    return any(f["rule"] == rule and f["summary"].startswith("Not evaluated") for f in rep["findings"])


@pytest.fixture(scope="module")
def healthy():
    return analysis_of(str(SAMPLES / "healthy")).report()


# -- io-share ---------------------------------------------------------------------------------------

def test_io_share_positive(tmp_path):
    rep = run(tmp_path, feature_ms=lambda rng: 40.0 * rng.lognormal(0, 0.4))
    [f] = fired(rep, "io-share")
    assert f["scope"]["dependency"] == "feature-store" and f["evidence"]["p95_share"] > 0.3
    assert rep["findings"][0]["rule"] == "io-share"


def test_io_share_negative(healthy):
    assert fired(healthy, "io-share") == []


# -- tail-segment -----------------------------------------------------------------------------------

def test_tail_segment_positive_and_related_to_its_cause():
    rep = analysis_of(str(SAMPLES / "slow-tokenizer")).report()
    [f] = fired(rep, "tail-segment")
    assert f["scope"]["dimension"] == "input size" and f["scope"]["segment"] == "2048-4095"
    assert f["evidence"]["ratio"] >= 3 and f["evidence"]["likely_caused_by"]["rule"] == "preprocessing-share"
    assert rep["findings"][0]["rule"] == "preprocessing-share"


@pytest.mark.parametrize("sample", ["healthy", "overload", "gpu-idle"])
def test_tail_segment_negative(sample):
    assert fired(analysis_of(str(SAMPLES / sample)).report(), "tail-segment") == []


# -- budget-overrun ---------------------------------------------------------------------------------

def test_budget_overrun_positive_negative_and_not_evaluated(healthy):
    a = analysis_of(str(SAMPLES / "healthy"))
    from triage.analyzers import engine

    tight = Constraints(budget={"inference_ms": 5, "preprocess_ms": 50, "total_ms": 200})
    out = [f for f in engine.run_rules(a.store, tight) if f.rule == "budget-overrun" and f.severity != "info"]
    assert [f.scope["stage"] for f in out] == ["inference"]
    assert out[0].evidence["headroom_ms"] < 0 and out[0].evidence["budget_ms"] == 5
    loose = Constraints(budget={"inference_ms": 500, "total_ms": 1000})
    assert [f for f in engine.run_rules(a.store, loose) if f.rule == "budget-overrun" and f.severity != "info"] == []
    assert not_evaluated(healthy, "budget-overrun")


def test_budget_table_in_report(tmp_path):
    from triage.analyzers.report import to_markdown

    rep = run(tmp_path, constraints=Constraints(budget={"inference_ms": 5, "total_ms": 200}))
    row = rep["budget"]["gateway POST /v1/classify"]
    assert row["inference"]["over"] and not row["total"]["over"]
    assert "Latency budget" in to_markdown(rep)


# -- slo-burn ---------------------------------------------------------------------------------------

def test_slo_burn_positive():
    a = analysis_of(str(SAMPLES / "retry-storm"))
    from triage.analyzers import engine

    out = [f for f in engine.run_rules(a.store, Constraints(slo={"error_rate": 0.01}))
           if f.rule == "slo-burn" and f.severity != "info"]
    assert out and out[0].severity == "critical" and out[0].evidence["burn_rate_long"] > 14.4


def test_slo_burn_negative_and_not_evaluated(healthy):
    a = analysis_of(str(SAMPLES / "healthy"))
    from triage.analyzers import engine

    out = [f for f in engine.run_rules(a.store, Constraints(slo={"error_rate": 0.01, "p95_ms": 100}))
           if f.rule == "slo-burn" and f.severity != "info"]
    assert out == []
    assert not_evaluated(healthy, "slo-burn")


# -- cold-start -------------------------------------------------------------------------------------

def test_cold_start_positive(tmp_path):
    rep = run(tmp_path, cold_start_s=4, cold_factor=8.0, duration_s=60)
    [f] = fired(rep, "cold-start")
    assert f["evidence"]["ratio"] >= 3 and f["evidence"]["cold_requests"] >= 5


def test_cold_start_negative(healthy):
    assert fired(healthy, "cold-start") == []


# -- memory-pressure --------------------------------------------------------------------------------

def test_memory_pressure_positive(tmp_path):
    [f] = fired(run(tmp_path, gpu_memory_frac=0.96), "memory-pressure")
    assert f["evidence"]["used_fraction_p95"] == pytest.approx(0.96, abs=0.005)


def test_memory_pressure_negative(healthy):
    assert fired(healthy, "memory-pressure") == []


def test_memory_pressure_from_oom_errors(tmp_path):
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "infer", "kind": 2,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            "status": {"code": 2, "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}}
    p = tmp_path / "oom.json"
    p.write_bytes(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))
    [f] = fired(analyze([p]).report(), "memory-pressure")
    assert f["severity"] == "critical" and f["evidence"]["oom_spans"] == 1


def test_memory_pressure_not_evaluated_without_data():
    assert not_evaluated(analysis_of(str(CAPTURE)).report(), "memory-pressure")


# -- throttling -------------------------------------------------------------------------------------

def test_throttling_positive_from_dcgm_clock_reasons(tmp_path):
    [f] = fired(run(tmp_path, clock_event_reasons=0x40), "throttling")
    assert f["evidence"]["reasons"] == ["HW thermal"] and f["evidence"]["throttled_fraction"] == 1.0


@pytest.mark.parametrize("sample", ["healthy", "overload", "retry-storm"])
def test_throttling_negative(sample):
    """Overload and retry storms raise latency over time too, but with load or queueing that explains it."""
    assert fired(analysis_of(str(SAMPLES / sample)).report(), "throttling") == []


# -- cost-per-inference -----------------------------------------------------------------------------

def test_cost_per_inference_positive_negative_and_not_evaluated(healthy):
    a = analysis_of(str(SAMPLES / "healthy"))
    from triage.analyzers import engine

    def cost(cap):
        c = Constraints(cost={"accelerator_price_per_hour": 2.0, "accelerators": 1, "cap_per_1000_calls": cap})
        return [f for f in engine.run_rules(a.store, c) if f.rule == "cost-per-inference" and f.severity != "info"]

    [f] = cost(0.01)
    rps = f.evidence["throughput_rps"]
    assert 9 < rps < 11  # the sample runs at 10 req/s
    assert f.evidence["cost_per_1000"] == pytest.approx(2.0 / (rps * 3600) * 1000, rel=1e-3)
    assert cost(1.0) == []
    assert not_evaluated(healthy, "cost-per-inference")
