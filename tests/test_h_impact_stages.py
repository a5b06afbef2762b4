"""Stages by position (work before the model-server call is preprocessing, whatever its name), the report's
stage_sources, and caching measured from an input fingerprint. Incidents are simulated and emitted with the
real OpenTelemetry SDK (sample_traces/generate.py)."""
import dataclasses

import pytest

from triage.analyzers.constraints import Constraints, ConstraintsError, load
from triage.sessions.offline import analyze
from triage.sample_traces.generate import generate
from triage.sample_traces.incidents import INCIDENTS


def _report(tmp_path, seed=11, constraints=None, **changes):
    base = INCIDENTS["slow-tokenizer"][0]
    inc = dataclasses.replace(base, name=changes.pop("name", "st"), duration_s=40, **changes)
    return analyze([generate(inc.name, tmp_path, incident=inc, seed=seed)], constraints=constraints).report()


def test_unnamed_work_before_the_model_call_is_preprocessing(tmp_path):
    """A gateway's `build_prompt` (no preprocessing keyword) before its call to Triton."""
    rep = _report(tmp_path, preprocess_span_name="build_prompt")
    first = rep["findings"][0]
    assert first["rule"] == "preprocessing-share" and first["severity"] == "critical"
    assert rep["stage_sources"]["build_prompt"] == {"preprocess": {"source": "position", "spans": pytest.approx(
        rep["latency"]["gateway POST /v1/classify"]["requests"], abs=0)}}
    assert rep["stage_sources"]["postprocess"]["postprocess"]["source"] == "name"


def test_an_override_wins_and_is_reported_as_such(tmp_path):
    from triage.analyzers.stages import StageRule

    c = Constraints(stage_rules=(StageRule("build_prompt", "network"),))
    rep = _report(tmp_path, constraints=c, preprocess_span_name="build_prompt")
    assert rep["stage_sources"]["build_prompt"] == {"network": {"source": "override", "spans": pytest.approx(
        rep["latency"]["gateway POST /v1/classify"]["requests"], abs=0)}}


def _cache_fix(rep):
    f = next(f for f in rep["findings"] if f["rule"] == "preprocessing-share")
    return f, next(r for r in f["remediations"] if r["id"] == "cache-preprocessing")


def test_repeat_rate_is_measured_from_the_fingerprint(tmp_path):
    rep = _report(tmp_path, input_repeat=0.4)
    f, fix = _cache_fix(rep)
    assert fix["fingerprint"]["key"] == "app.input_hash"
    assert 0.3 <= fix["repeat_rate"] <= 0.5  # the simulator repeats 40% of inputs (binomial noise)
    assert fix["saving_p95_ms"] == pytest.approx(f["evidence"]["saving_p95_ms"] * fix["repeat_rate"], rel=0.01)


def test_repeat_rate_unknown_without_a_fingerprint(tmp_path):
    rep = _report(tmp_path)
    _, fix = _cache_fix(rep)
    assert fix["repeat_rate"] is None and fix["note"].startswith("repeat rate unknown")


def test_fingerprint_keys_are_configurable(tmp_path):
    p = tmp_path / "triage.toml"
    p.write_text('[caching]\nfingerprint_keys = ["x.digest"]\n')
    assert load(p).caching["fingerprint_keys"] == ["x.digest"]
    rep = _report(tmp_path, input_repeat=0.4, constraints=load(p))
    assert _cache_fix(rep)[1]["repeat_rate"] is None  # app.input_hash is not among the configured keys
    p.write_text("[caching]\nfingerprint_keys = []\n")
    with pytest.raises(ConstraintsError, match=r"triage.toml:2: caching.fingerprint_keys: expected a non-empty array"):
        load(p)
