"""The LLM engine rules (kv-cache-pressure, concurrency-cap, long-prompt-blocking) and the TTFT SLO basis of
their saving: on the real vllm-gateway-mixed capture (expectations from its raw files) and on small
engine-shaped captures written here (vLLM ``llm_request`` spans as OTLP JSON, its scheduler gauges as a
timestamped /metrics text), each built so that exactly one cause is present."""
from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest

from conftest import VLLM_CAPTURE, analysis_of, need, raw_otlp_spans

T0 = 1_800_000_000.0  # seconds
GATEWAY = "llm-gateway POST /v1/generate"


def _attr(k, v):
    return {"key": k, "value": {"doubleValue": float(v)} if isinstance(v, float) else {"intValue": str(v)}}


def write_capture(path, reqs, scrapes):
    """``reqs``: dicts with arrival ``t``, ``queue``, ``prefill``, ``decode``, ``ttft`` (s), ``prompt``,
    ``out`` tokens; ``scrapes``: (t, running, waiting, kv, preemptions_total)."""
    spans = []
    for i, r in enumerate(reqs):
        e2e = r["queue"] + r["prefill"] + r["decode"] + 0.002
        attrs = [_attr("gen_ai.latency.time_in_queue", r["queue"]), _attr("gen_ai.latency.time_in_model_prefill", r["prefill"]),
                 _attr("gen_ai.latency.time_in_model_decode", r["decode"]),
                 _attr("gen_ai.latency.time_to_first_token", r["ttft"]), _attr("gen_ai.latency.e2e", e2e),
                 _attr("gen_ai.usage.prompt_tokens", r["prompt"]), _attr("gen_ai.usage.completion_tokens", r["out"])]
        if "max" in r:
            attrs.append(_attr("gen_ai.request.max_tokens", r["max"]))
        spans.append({"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "llm_request", "kind": 2,
                      "startTimeUnixNano": str(int((T0 + r["t"]) * 1e9)),
                      "endTimeUnixNano": str(int((T0 + r["t"] + e2e) * 1e9)), "attributes": attrs})
    (path / "traces.json").write_text(json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "vllm"}}]}, "scopeSpans": [{"spans": spans}]}]}))
    lab = '{engine="0",model_name="tiny"}'
    lines = ["# TYPE vllm:num_requests_running gauge", "# TYPE vllm:num_requests_waiting gauge",
             "# TYPE vllm:kv_cache_usage_perc gauge", "# TYPE vllm:num_preemptions_total counter"]
    for t, run, wait, kv, pre in scrapes:
        ms = int((T0 + t) * 1e3)
        lines += [f"vllm:num_requests_running{lab} {run} {ms}", f"vllm:num_requests_waiting{lab} {wait} {ms}",
                  f"vllm:kv_cache_usage_perc{lab} {kv} {ms}", f"vllm:num_preemptions_total{lab} {pre} {ms}"]
    (path / "metrics.prom").write_text("\n".join(lines) + "\n")
    return path


def serial_engine(path, kv: float, preempt: bool = False, n: int = 40, gap: float = 0.1, service: float = 0.2):
    """One sequence at a time (a cap of 1): arrivals every ``gap`` s, ``service`` s each, so a backlog builds."""
    reqs, free = [], 0.0
    for i in range(n):
        t = i * gap
        begin = max(t, free)
        free = begin + service
        reqs.append({"t": t, "queue": begin - t, "prefill": 0.01, "decode": service - 0.01,
                     "ttft": begin - t + 0.011, "prompt": 100, "out": 20})
    scrapes = []
    for k in range(int(free / 0.5) + 2):
        t = k * 0.5
        running = int(any(r["t"] + r["queue"] <= t < r["t"] + r["queue"] + service for r in reqs))
        waiting = sum(r["t"] <= t < r["t"] + r["queue"] for r in reqs)
        scrapes.append((t, running, waiting, kv, k if preempt else 0))
    return write_capture(path, reqs, scrapes)


def _firing(path):
    from triage.sessions.offline import analyze

    return [f for f in analyze([path]).findings if f.severity in ("critical", "warning")]


def _found(path, rule):
    from triage.sessions.offline import analyze

    return [f for f in analyze([path]).findings if f.rule == rule]


# --- kv-cache-pressure ---------------------------------------------------------------------------------

def _raw_metric_max(family):
    vals = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(family)}\{{[^}}]*\}} (\S+) \d+$",
                                                   gzip.decompress((VLLM_CAPTURE / "metrics.prom.gz").read_bytes()).decode(), re.M)]
    return max(vals), vals


def test_kv_cache_pressure_is_first_on_vllm_gateway_mixed():
    need(VLLM_CAPTURE)
    kv_max, kv = _raw_metric_max("vllm:kv_cache_usage_perc")
    waiting_max, _ = _raw_metric_max("vllm:num_requests_waiting")
    pre_max, pre = _raw_metric_max("vllm:num_preemptions_total")
    # the scenario from the raw scrapes: the cache full at p95, requests waiting and preempted
    assert np.percentile(kv, 95) >= 0.9 and waiting_max > 0 and pre[-1] - pre[0] > 0
    findings = [f for f in analysis_of(str(VLLM_CAPTURE)).findings if f.severity in ("critical", "warning")]
    assert findings[0].rule == "kv-cache-pressure", [(f.rule, f.severity) for f in findings]
    f = findings[0]
    assert f.scope["route"] == GATEWAY
    assert f.evidence["preemptions"] == pre[-1] - pre[0]
    assert f.evidence["max_waiting_while_kv_full"] <= waiting_max
    # memory-pressure (the same full cache, seen as memory) ranks after it and names it as its cause
    mem = next(x for x in findings if x.rule == "memory-pressure")
    assert mem.evidence["likely_caused_by"]["rule"] == "kv-cache-pressure"
    assert "concurrency-cap" not in {x.rule for x in findings}  # 4 running with the cache full: memory binds


def test_kv_cache_pressure_positive_synthetic(tmp_path):
    fired = _firing(serial_engine(tmp_path, kv=0.97, preempt=True))
    assert fired[0].rule == "kv-cache-pressure"
    assert "concurrency-cap" not in {f.rule for f in fired}


def test_kv_cache_pressure_negative_full_cache_but_nothing_waits(tmp_path):
    """A cache that is full but admits everything (no waiting, no preemption) is vLLM working as designed."""
    reqs = [{"t": i * 0.5, "queue": 0.0, "prefill": 0.01, "decode": 0.1, "ttft": 0.011, "prompt": 100, "out": 20}
            for i in range(30)]
    path = write_capture(tmp_path, reqs, [(k * 0.5, 1, 0, 0.97, 0) for k in range(32)])
    assert _found(path, "kv-cache-pressure") == []


def test_kv_cache_pressure_not_evaluated_without_kv_metrics(tmp_path):
    reqs = [{"t": i * 0.5, "queue": 0.0, "prefill": 0.01, "decode": 0.1, "ttft": 0.011, "prompt": 100, "out": 20}
            for i in range(10)]
    write_capture(tmp_path, reqs, [])
    (f,) = _found(tmp_path, "kv-cache-pressure")
    assert not f.evaluated and "KV-cache usage metrics" in f.summary


# --- concurrency-cap -----------------------------------------------------------------------------------

def test_concurrency_cap_positive_synthetic(tmp_path):
    fired = _firing(serial_engine(tmp_path, kv=0.1))
    assert fired[0].rule == "concurrency-cap", [(f.rule, f.severity) for f in fired]
    assert fired[0].evidence["cap_running"] == 1
    assert "kv-cache-pressure" not in {f.rule for f in fired}
    qg = [f for f in fired if f.rule == "queueing-growth"]
    assert all(f.evidence["likely_caused_by"]["rule"] == "concurrency-cap" for f in qg)


def test_concurrency_cap_negative_when_kv_binds(tmp_path):
    assert _found(serial_engine(tmp_path, kv=0.95, preempt=True), "concurrency-cap") == []


def test_concurrency_cap_negative_when_nothing_waits(tmp_path):
    assert _found(serial_engine(tmp_path, kv=0.1, gap=0.5), "concurrency-cap") == []


# --- long-prompt-blocking ------------------------------------------------------------------------------

def blocking_engine(path, chunk_s: float | None):
    """Short prompts every 0.1 s (5 ms prefill); a 2,000-token prompt every second whose 300 ms prefill runs in
    one step; a short prompt arriving during it waits for the step's end outside the queue (queue 0) — unless
    prefills are chunked (``chunk_s``: it waits at most one chunk)."""
    reqs = []
    for k in range(8):
        base = k * 1.0
        lp = (base + 0.05, base + 0.35)
        reqs.append({"t": base + 0.05, "queue": 0.0, "prefill": 0.3, "decode": 0.2, "ttft": 0.301, "prompt": 2000, "out": 20})
        for j in range(10):
            t = base + j * 0.1 + 0.01
            hol = (min(lp[1] - t, chunk_s) if chunk_s else lp[1] - t) if lp[0] <= t < lp[1] else 0.0
            reqs.append({"t": t, "queue": 0.0, "prefill": 0.005, "decode": 0.05, "ttft": hol + 0.006,
                         "prompt": 60, "out": 10})
    return write_capture(path, reqs, [])


def test_long_prompt_blocking_positive(tmp_path):
    (f,) = _found(blocking_engine(tmp_path, None), "long-prompt-blocking")
    assert f.evaluated and f.severity in ("critical", "warning")
    # 3 of each second's 10 shorts arrive during the 300 ms prefill (at +0.11, +0.21, +0.31 s, it ends at +0.35):
    # 240 / 140 / 40 ms head-of-line waits, plus the 1 ms of TTFT past their own prefill
    assert f.evidence["short_overlapped"] == 24 and f.evidence["hol_wait_ms_p50_overlapped"] == pytest.approx(141, abs=0.5)
    assert f.evidence["hol_wait_ms_p50_clear"] == pytest.approx(1, abs=0.5)


def test_long_prompt_blocking_chunked_prefill_is_immaterial(tmp_path):
    """20 ms chunks: the short prompts still wait one chunk (present), 20 ms of a ~300 ms p95 (immaterial)."""
    (f,) = _found(blocking_engine(tmp_path, 0.02), "long-prompt-blocking")
    assert f.severity == "info" and f.impact_ms == pytest.approx(20, abs=1)


def test_long_prompt_blocking_negative_with_small_chunks(tmp_path):
    assert _found(blocking_engine(tmp_path, 0.003), "long-prompt-blocking") == []


def test_long_prompt_blocking_silent_on_vllm_gateway_mixed():
    """The capture's prefills are 15-25 ms (README): no prompt blocks another for long."""
    need(VLLM_CAPTURE)
    assert [f for f in analysis_of(str(VLLM_CAPTURE)).findings
            if f.rule == "long-prompt-blocking" and f.severity in ("critical", "warning")] == []


# --- the TTFT SLO basis --------------------------------------------------------------------------------

def test_ttft_slo_measures_the_saving_on_ttft_p95(tmp_path):
    from triage.analyzers.constraints import find
    from triage.analyzers.rules import default_thresholds, threshold_units
    from triage.sessions.offline import analyze

    path = serial_engine(tmp_path, kv=0.1)
    (tmp_path / "triage.toml").write_text("[slo]\nttft_p95_ms = 100\n")
    a = analyze([path], constraints=find([path], str(tmp_path / "triage.toml"), default_thresholds(), threshold_units()))
    f = next(x for x in a.findings if x.rule == "concurrency-cap")
    spans = json.loads((tmp_path / "traces.json").read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    ttft = np.array([next(a_["value"]["doubleValue"] for a_ in s["attributes"]
                          if a_["key"] == "gen_ai.latency.time_to_first_token") for s in spans])
    assert f.evidence["saving_measured_on"] == "ttft_p95_ms"
    assert f.evidence["scope_p95_ms"] == pytest.approx(np.percentile(ttft, 95) * 1e3, abs=1e-3)
    assert f.severity == "critical"  # the queue is most of TTFT: removing it brings TTFT p95 under 100 ms
    assert "off TTFT p95" in f.summary


def test_ttft_and_itl_slos_are_typed(tmp_path):
    from triage.analyzers.constraints import ConstraintsError, find

    (tmp_path / "triage.toml").write_text("[slo]\nttft_p95_ms = -1\n")
    with pytest.raises(ConstraintsError, match="ttft_p95_ms"):
        find([tmp_path], str(tmp_path / "triage.toml"), {})
    (tmp_path / "triage.toml").write_text("[slo]\nttft_p95_ms = 500\nitl_p95_ms = 50\n")
    c = find([tmp_path], str(tmp_path / "triage.toml"), {})
    assert c.slo["ttft_p95_ms"] == 500 and c.slo["itl_p95_ms"] == 50


def test_concurrency_cap_negative_when_sequences_were_preempted(tmp_path):
    """A preemption means the cache ran out: raising the cap would make that worse, so the cap is not named,
    however low the usage read at the scrapes."""
    assert _found(serial_engine(tmp_path, kv=0.1, preempt=True), "concurrency-cap") == []



# --- length-capped -------------------------------------------------------------------------------------

def test_length_capped_on_vllm_gateway_mixed_counts_the_raw_finish_reasons():
    """The capture's load used ignore_eos: every answer ran to max_tokens. Expectation from the OTLP bodies."""
    length = total = 0
    for sp in raw_otlp_spans(VLLM_CAPTURE):
        for a in sp.attributes:
            if a.key == "gen_ai.response.finish_reasons":
                total += 1
                length += "length" in [v.string_value for v in a.value.array_value.values]
    (f,) = [x for x in analysis_of(str(VLLM_CAPTURE)).findings if x.rule == "length-capped"]
    assert (f.evidence["length_finished"], f.evidence["requests_with_reason"]) == (length, total)
    assert f.severity == "info"  # about the answers, not a latency cause: kv-cache-pressure still leads


def test_length_capped_negative_when_answers_stop_on_their_own(tmp_path):
    reqs = [{"t": i * 0.3, "queue": 0.0, "prefill": 0.01, "decode": 0.1, "ttft": 0.011, "prompt": 100,
             "out": 20 + i % 7, "max": 64} for i in range(40)]
    assert _found(write_capture(tmp_path, reqs, []), "length-capped") == []


def test_length_capped_positive_from_token_counts(tmp_path):
    reqs = [{"t": i * 0.3, "queue": 0.0, "prefill": 0.01, "decode": 0.1, "ttft": 0.011, "prompt": 100,
             "out": 64 if i % 2 else 30, "max": 64} for i in range(40)]
    (f,) = _found(write_capture(tmp_path, reqs, []), "length-capped")
    assert f.evidence["length_finished"] == 20 and f.evidence["share"] == 0.5
