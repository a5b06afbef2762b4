"""triage compare: a 10% p95 shift on 5-minute captures is detected with its confidence; two halves of one
steady capture show no significant change. Captures come from the simulator through the OpenTelemetry SDK."""
import dataclasses
import json

import numpy as np
import pytest

from triage.analyzers.compare import bootstrap_diff, compare, durations_ms
from triage.analyzers.constraints import Constraints
from triage.sessions.offline import analyze
from triage.sample_traces.generate import generate
from triage.sample_traces.incidents import INCIDENTS
from triage.cli.main import main

STEADY = dataclasses.replace(INCIDENTS["slow-tokenizer"][0], name="steady5m", duration_s=300, rate=lambda t: 10.0,
                             input_sizes=((32, 50), (64, 50)), tokenize_ms_per_token=0.02)


def _slower(inc, factor):
    base = inc.server_ms
    return dataclasses.replace(inc, name=f"{inc.name}-x{factor}", tokenize_ms_per_token=inc.tokenize_ms_per_token * factor,
                               server_ms=lambda rng, n: base(rng, n) * factor, postprocess_ms=inc.postprocess_ms * factor)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    before = generate(STEADY.name, root, incident=STEADY, seed=1)
    after = generate("after", root, incident=dataclasses.replace(_slower(STEADY, 1.10), name="after"), seed=2)
    return before, after


def test_ten_percent_p95_shift_is_detected(captures, capsys):
    before, after = captures
    rc = main(["compare", str(before), str(after), "--format", "json", "--fail-on-regression"])
    res = json.loads(capsys.readouterr().out)
    e = res["routes"]["gateway POST /v1/classify"]
    assert e["before"]["requests"] > 2500 and e["after"]["requests"] > 2500  # ~5 minutes at 10 req/s
    assert e["verdict"] == "regressed" and rc == 1
    assert 5 < e["change"]["p95"]["pct"] < 15
    lo, hi = e["change"]["p95"]["ci_ms"]
    assert 0 < lo < e["change"]["p95"]["ms"] < hi
    assert "95% bootstrap CI" in e["verdict_basis"]
    # and the other way round it is an improvement
    main(["compare", str(after), str(before), "--format", "json"])
    assert json.loads(capsys.readouterr().out)["routes"]["gateway POST /v1/classify"]["verdict"] == "improved"


def test_two_halves_of_a_steady_capture_show_no_change(captures):
    a = analyze([captures[0]])
    rows = a.store.query("SELECT route, start_ns, duration_ns FROM requests ORDER BY start_ns")
    mid = rows[len(rows) // 2][1]
    first = {rows[0][0]: np.array([d for _, s, d in rows if s < mid]) / 1e6}
    second = {rows[0][0]: np.array([d for _, s, d in rows if s >= mid]) / 1e6}
    res = compare(first, second, Constraints())
    e = res["routes"][rows[0][0]]
    assert e["verdict"] == "no significant change"
    lo, hi = e["change"]["p95"]["ci_ms"]
    assert lo < 0 < hi


def test_slo_verdict_before_and_after(captures):
    before = durations_ms(analyze([captures[0]]).store)
    after = durations_ms(analyze([captures[1]]).store)
    p95_before = float(np.percentile(next(iter(before.values())), 95))
    res = compare(before, after, Constraints(slo={"p95_ms": p95_before * 1.05}))
    slo = res["routes"]["gateway POST /v1/classify"]["slo"]
    assert slo == {"p95_ms": p95_before * 1.05, "p99_ms": None, "met_before": True, "met_after": False}


def test_bootstrap_interval_covers_zero_for_identical_distributions():
    rng = np.random.default_rng(5)
    x = rng.lognormal(3, 0.5, 4000)
    obs, lo, hi = bootstrap_diff(x, x.copy(), 95)
    assert obs == 0 and lo <= 0 <= hi


def test_markdown_and_usage_errors(captures, capsys):
    assert main(["compare", str(captures[0]), str(captures[1])]) == 0
    md = capsys.readouterr().out
    assert md.startswith("## triage compare") and "**regressed**" in md
    assert main(["compare", "/nonexistent", str(captures[1])]) == 2
