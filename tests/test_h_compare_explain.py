"""triage compare explains a change (issue 14): which stage regressed, with its CI; the findings that appeared or
went away; how much of a p95 change is the input mix and how much per-request speed.

Before/after pairs come from the simulator through the real OpenTelemetry SDK (sample_traces.generate). The
expected figures are computed here, with numpy, from the simulator's own raw timings (``simulate.run`` with the
same seed): never from triage's store."""
import dataclasses
import json

import numpy as np
import pytest

from triage.analyzers.compare import compare_findings
from triage.analyzers.finding import Finding
from triage.sample_traces.generate import T0, generate
from triage.sample_traces.incidents import INCIDENTS
from triage.sample_traces.simulate import MS, run
from triage.cli.main import main

ROUTE = "gateway POST /v1/classify"
BASE = dataclasses.replace(INCIDENTS["healthy"][0], name="base", duration_s=120, rate=lambda t: 12.0,
                           input_sizes=((32, 40), (64, 40), (256, 20)), tokenize_ms_per_token=0.01)


def _server(median_ms):
    return lambda rng, tokens: median_ms * rng.lognormal(0, 0.15)


def _capture(root, inc, seed):
    """The capture written through the OpenTelemetry SDK, and the simulator's raw requests behind it."""
    return generate(inc.name, root, incident=inc, seed=seed), run(inc, seed, T0)


def _raw(reqs):
    """Per request, from the simulator: end-to-end ms, tokenize ms, model-server compute ms, input tokens."""
    e2e = np.array([(r.end_ns - r.start_ns) / MS for r in reqs])
    tok = np.array([(r.tokenize_end_ns - ((r.feature_end_ns or r.start_ns) + int(0.15 * MS))) / MS for r in reqs])
    compute = np.array([sum(a.end_ns - a.start_ns for a in r.attempts) / MS for r in reqs])
    tokens = np.array([r.tokens for r in reqs])
    return e2e, tok, compute, tokens


def _compare_json(capsys, before, after):
    assert main(["compare", str(before), str(after), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """The seed's story: quantization shipped (the model answers in half the time), and the release also
    switched to a tokenizer 6x slower per token."""
    root = tmp_path_factory.mktemp("story")
    before = _capture(root, dataclasses.replace(BASE, name="before", server_ms=_server(20.0)), 3)
    after = _capture(root, dataclasses.replace(BASE, name="after", server_ms=_server(10.0),
                                               tokenize_ms_per_token=0.06), 4)
    return before, after


def test_compute_faster_preprocessing_slower_names_preprocessing_with_its_ci(story, capsys):
    (b_path, b_reqs), (a_path, a_reqs) = story
    res = _compare_json(capsys, b_path, a_path)
    st = res["stages"][ROUTE]
    _, tok_b, comp_b, _ = _raw(b_reqs)
    _, tok_a, comp_a, _ = _raw(a_reqs)
    pre = st["stages"]["preprocess"]
    # triage's per-stage figures are the simulator's tokenize durations (µs rounding of span timestamps aside)
    assert pre["before"]["p95_ms"] == pytest.approx(np.percentile(tok_b, 95), abs=0.01)
    assert pre["after"]["p95_ms"] == pytest.approx(np.percentile(tok_a, 95), abs=0.01)
    expected = np.percentile(tok_a, 95) - np.percentile(tok_b, 95)  # ~ +11 ms
    assert expected > 8
    lo, hi = pre["change"]["p95"]["ci_ms"]
    assert 0 < lo < expected < hi and pre["verdict"] == "regressed"
    assert st["regressed"][0] == "preprocess"
    # and the model got faster: inference improved at p95, by about what the simulator's compute says
    inf = st["stages"]["inference"]
    assert inf["verdict"] == "improved" and "inference" in st["improved"] and "inference" not in st["regressed"]
    assert inf["change"]["p95"]["ms"] == pytest.approx(np.percentile(comp_a, 95) - np.percentile(comp_b, 95), abs=1.0)
    assert inf["change"]["p95"]["ci_ms"][1] < 0
    # the Markdown says the same, with the CI
    assert main(["compare", str(b_path), str(a_path)]) == 0
    md = capsys.readouterr().out
    c = pre["change"]["p95"]
    assert f"**Regressed at p95:** preprocess {c['ms']:+.1f} ms [{lo:+.1f}, {hi:+.1f}]" in md
    assert "### Stages: gateway POST /v1/classify" in md and "### Mix or speed (p95)" in md


def test_story_is_speed_not_mix(story, capsys):
    """Same input mix before and after: the p95 change is per-request speed, the mix part is near zero."""
    (b_path, b_reqs), (a_path, a_reqs) = story
    m = _compare_json(capsys, b_path, a_path)["mix"][ROUTE]
    e2e_b, _, _, _ = _raw(b_reqs)
    e2e_a, _, _, _ = _raw(a_reqs)
    total = np.percentile(e2e_a, 95) - np.percentile(e2e_b, 95)
    assert m["p95_change_ms"] == pytest.approx(total, abs=0.05)
    assert m["unmatched_before_share"] == 0 and m["strata"] == 3
    assert abs(m["mix"]["ms"]) < 0.25 * abs(total) + 1.0
    assert m["mix"]["ci_ms"][0] <= 0 <= m["mix"]["ci_ms"][1] or abs(m["mix"]["ms"]) < 1.0


def _weighted_p95(x, strata_x, ref_strata):
    """Reference implementation, written independently: the after-requests re-weighted so each stratum has its
    share of the reference traffic, and the smallest duration whose cumulative weight reaches 95%."""
    share_ref = {s: np.mean(ref_strata == s) for s in np.unique(ref_strata)}
    share_x = {s: np.mean(strata_x == s) for s in np.unique(strata_x)}
    pairs = sorted((v, share_ref.get(s, 0.0) / share_x[s]) for v, s in zip(x, strata_x))
    total = sum(w for _, w in pairs)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= 0.95 * total - 1e-12:
            return v
    return pairs[-1][0]


def test_mix_shift_is_split_from_speed(tmp_path, capsys):
    """After: the same service (same per-token and model costs), but long inputs went from 3% to 25% of
    traffic, so the p95 request is now a long one. The p95 rose; the after-requests re-weighted to the before
    mix have about the before p95: the change is the mix, not the service."""
    mix_b = dataclasses.replace(BASE, name="mix-before", input_sizes=((32, 55), (64, 42), (1024, 3)),
                                tokenize_ms_per_token=0.03, server_ms=_server(15.0))
    mix_a = dataclasses.replace(mix_b, name="mix-after", input_sizes=((32, 40), (64, 35), (1024, 25)))
    (b_path, b_reqs), (a_path, a_reqs) = _capture(tmp_path, mix_b, 5), _capture(tmp_path, mix_a, 6)
    m = _compare_json(capsys, b_path, a_path)["mix"][ROUTE]
    e2e_b, _, _, tok_b = _raw(b_reqs)
    e2e_a, _, _, tok_a = _raw(a_reqs)
    p_b, p_a = np.percentile(e2e_b, 95), np.percentile(e2e_a, 95)
    p_rw = _weighted_p95(e2e_a, tok_a, tok_b)
    assert m["p95_before_ms"] == pytest.approx(p_b, abs=0.05)
    assert m["p95_after_ms"] == pytest.approx(p_a, abs=0.05)
    assert m["p95_after_at_before_mix_ms"] == pytest.approx(p_rw, abs=0.05)
    assert p_a - p_b > 5  # the mix shift moved p95 materially...
    assert m["mix"]["ms"] == pytest.approx(p_a - p_rw, abs=0.1) and m["speed"]["ms"] == pytest.approx(p_rw - p_b, abs=0.1)
    assert m["mix"]["ms"] > 0.7 * m["p95_change_ms"]  # ...and most of it is the mix
    assert m["mix"]["ci_ms"][0] > 0  # significantly
    assert m["speed"]["ci_ms"][0] <= 0 <= m["speed"]["ci_ms"][1]  # the service itself did not change
    assert m["by_stratum"]["clf|1024"] == {"before_share": pytest.approx(np.mean(tok_b == 1024), abs=1e-4),
                                        "after_share": pytest.approx(np.mean(tok_a == 1024), abs=1e-4)}


def test_findings_that_appeared_went_away_or_changed():
    def f(rule, sev):
        return Finding(rule=rule, severity=sev, title=rule, summary=f"{rule} {sev}")

    before = [f("batching-window", "critical"), f("queueing-growth", "warning"), f("cold-start", "warning"),
              f("gpu-underutilized", "info")]
    after = [f("preprocessing-share", "critical"), f("queueing-growth", "warning"), f("cold-start", "critical"),
             f("gpu-underutilized", "warning")]
    d = compare_findings(before, after)
    assert [(x["rule"], x["severity"]) for x in d["appeared"]] == [("preprocessing-share", "critical"),
                                                                   ("gpu-underutilized", "warning")]
    assert [(x["rule"], x["severity"]) for x in d["went_away"]] == [("batching-window", "critical")]
    assert d["severity_changed"] == [{"rule": "cold-start", "before": "warning", "after": "critical"}]
    assert d["unchanged"] == [{"rule": "queueing-growth", "severity": "warning"}]


def test_story_findings_come_from_each_capture(story, capsys):
    """The findings part of compare is the difference of the two reports' own findings at warning+."""
    (b_path, _), (a_path, _) = story
    res = _compare_json(capsys, b_path, a_path)
    reports = []
    for p in (b_path, a_path):
        main(["report", str(p), "--format", "json"])
        reports.append({f["rule"]: f["severity"] for f in json.loads(capsys.readouterr().out)["findings"][::-1]
                        if f["severity"] in ("critical", "warning")})
    b, a = reports
    assert {x["rule"] for x in res["findings"]["appeared"]} == set(a) - set(b)
    assert {x["rule"] for x in res["findings"]["went_away"]} == set(b) - set(a)


def test_order_statistic_bootstrap_agrees_with_resampling():
    """The stages' bootstrap (order statistics, no resamples materialised) gives the intervals of the plain
    resampling bootstrap: bounds within a fifth of the interval's width, on skewed data with many zeros too."""
    from triage.analyzers.compare import bootstrap_diff, bootstrap_diff_fast

    rng = np.random.default_rng(11)
    cases = [(rng.lognormal(2, 0.6, n), rng.lognormal(2.1, 0.6, n)) for n in (40, 800, 4000)]
    z = np.r_[np.zeros(900), rng.lognormal(1, 1, 100)]
    cases.append((z, z * 1.5))
    for b, a in cases:
        for q in (50, 95):
            obs, lo, hi = bootstrap_diff(b, a, q, n_boot=3000)
            obs_f, lo_f, hi_f = bootstrap_diff_fast(b, a, q, n_boot=3000)
            width = hi - lo
            assert obs_f == obs
            assert abs(lo_f - lo) <= 0.2 * width + 1e-9 and abs(hi_f - hi) <= 0.2 * width + 1e-9, (len(b), q, lo, hi, lo_f, hi_f)


def _span_ms(capture, name):
    """Durations of the spans called ``name`` in a capture's OTLP JSON lines, read with json alone."""
    import gzip

    out = []
    with gzip.open(capture / "traces.otlp.jsonl.gz", "rt") as fh:
        for line in fh:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    out += [(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])) / 1e6
                            for s in ss["spans"] if s["name"] == name]
    return np.asarray(out)


def test_real_stack_captures_slower_tokenizer_is_the_stage_that_regressed(capsys):
    """On two captures of the real stack (tests/fixtures/matrix): the same gateway and Triton, a tokenizer
    200x slower per token. preprocess is the stage that regressed, by what the tokenize spans say."""
    from pathlib import Path

    matrix = Path(__file__).parent / "fixtures" / "matrix"
    before, after = matrix / "healthy-w0-light", matrix / "slow-tokenizer"
    st = _compare_json(capsys, before, after)["stages"][ROUTE]
    tb, ta = _span_ms(before, "tokenize"), _span_ms(after, "tokenize")
    pre = st["stages"]["preprocess"]
    assert pre["before"]["p95_ms"] == pytest.approx(np.percentile(tb, 95), abs=0.01)
    assert pre["after"]["p95_ms"] == pytest.approx(np.percentile(ta, 95), abs=0.01)
    lo, hi = pre["change"]["p95"]["ci_ms"]
    assert lo > 0 and lo < np.percentile(ta, 95) - np.percentile(tb, 95) < hi
    assert st["regressed"][0] == "preprocess"
