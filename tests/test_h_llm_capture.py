"""The real vLLM + gateway capture (vllm-gateway-mixed): queue / prefill / decode stages, TTFT and ITL, the TTFT
tail decomposition and the histogram fallback, each checked against an independent reading of the raw files
(the generated protobuf classes for the OTLP bodies, plain text parsing for the metrics, numpy percentiles)."""
import gzip
import re
import shutil

import numpy as np
import pytest

from conftest import VLLM_CAPTURE, analysis_of, need

ROUTE = "llm-gateway POST /v1/generate"


def _attr(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "int_value", "double_value", "bool_value") else None


@pytest.fixture(scope="module")
def raw():
    """Per trace: the gateway root's (start, end) and the vLLM llm_request span's attributes, straight from the
    OTLP/HTTP bodies."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    roots, engine = {}, {}
    for f in sorted((need(VLLM_CAPTURE) / "otlp").iterdir()):
        req = ExportTraceServiceRequest()
        req.ParseFromString(f.read_bytes())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    t = s.trace_id.hex()
                    if s.name == "POST /v1/generate":
                        roots[t] = (s.start_time_unix_nano, s.end_time_unix_nano)
                    elif s.name == "llm_request":
                        engine[t] = {a.key: _attr(a.value) for a in s.attributes}
    assert len(roots) == len(engine) == 242
    return roots, engine


@pytest.fixture(scope="module")
def vcap():
    return analysis_of(str(need(VLLM_CAPTURE)))


def _metrics_text() -> str:
    return gzip.decompress((VLLM_CAPTURE / "metrics.prom.gz").read_bytes()).decode()


def _raw_histogram_quantile(text: str, family: str, q: float) -> float:
    """PromQL's histogram_quantile over the window: bucket increases between the first and last scrape."""
    first, last = {}, {}
    for line in text.splitlines():
        m = re.match(rf'^{re.escape(family)}_bucket\{{(.*)\}} (\S+) (\d+)$', line)
        if not m:
            continue
        le = float(re.search(r'le="([^"]+)"', m.group(1)).group(1))
        first.setdefault(le, float(m.group(2)))
        last[le] = float(m.group(2))
    bounds = sorted(first)
    cum = np.array([last[b] - first[b] for b in bounds])
    rank = q * cum[-1]
    i = int(np.searchsorted(cum, rank))
    lo_b, lo_c = (bounds[i - 1], cum[i - 1]) if i else (0.0, 0.0)
    if np.isinf(bounds[i]):
        return bounds[-2]
    return lo_b + (bounds[i] - lo_b) * (rank - lo_c) / (cum[i] - lo_c)


def test_stages_add_up_and_split_the_engine_span(vcap, raw):
    roots, engine = raw
    store = vcap.store
    totals = dict(((t, ns) for t, ns in store.query(
        "SELECT trace_id, sum(ns) FROM request_stages GROUP BY trace_id")))
    assert len(totals) == 242
    for t, (b, e) in roots.items():
        assert totals[t] == e - b, t  # every stage of every joined request adds up to its end-to-end time
    parts = {(t, st): ns for t, st, ns in store.query(
        "SELECT trace_id, stage, ns FROM request_stages WHERE stage IN ('queue', 'prefill', 'decode')")}
    for t, a in engine.items():
        for stage, key in (("queue", "time_in_queue"), ("prefill", "time_in_model_prefill"),
                           ("decode", "time_in_model_decode")):
            want = a[f"gen_ai.latency.{key}"] * 1e9
            assert abs(parts.get((t, stage), 0) - want) <= 1, (t, stage)
    rep = vcap.report()
    st = rep["stages"][ROUTE]
    for stage, key in (("queue", "time_in_queue"), ("prefill", "time_in_model_prefill"),
                       ("decode", "time_in_model_decode")):
        v = np.array([a[f"gen_ai.latency.{key}"] for a in engine.values()]) * 1e3
        assert st[stage]["p50_ms"] == pytest.approx(np.percentile(v, 50), abs=1e-3)
        assert st[stage]["p95_ms"] == pytest.approx(np.percentile(v, 95), abs=1e-3)
    assert "inference" not in st  # the engine's time is queue, prefill, decode and its own handling


def test_ttft_and_itl_percentiles_equal_the_raw_spans(vcap, raw):
    _, engine = raw
    ttft = np.array([a["gen_ai.latency.time_to_first_token"] for a in engine.values()]) * 1e3
    itl = np.array([a["gen_ai.latency.time_in_model_decode"] / (a["gen_ai.usage.completion_tokens"] - 1)
                    for a in engine.values() if a["gen_ai.usage.completion_tokens"] >= 2]) * 1e3
    lat = vcap.report()["latency"][ROUTE]
    assert lat["token_latency_source"] == "spans"
    assert lat["ttft_requests"] == 242 and lat["itl_requests"] == len(itl)
    for q in (50, 95, 99):
        assert lat[f"ttft_p{q}_ms"] == pytest.approx(np.percentile(ttft, q), abs=1e-3)
        assert lat[f"itl_p{q}_ms"] == pytest.approx(np.percentile(itl, q), abs=1e-3)
    assert lat["ttft_p95_ms"] == pytest.approx(2611.0, abs=0.1)  # the capture README's figure


def test_ttft_tail_decomposition(vcap, raw):
    _, engine = raw
    rows = [(a["gen_ai.latency.time_to_first_token"], a["gen_ai.latency.time_in_queue"],
             a["gen_ai.latency.time_in_model_prefill"]) for a in engine.values()]
    p95 = np.percentile([r[0] for r in rows], 95)
    tail = [r for r in rows if r[0] >= p95]
    b = vcap.report()["ttft_breakdown"][ROUTE]
    assert b["cohort"] == len(tail)
    q = [min(r[1], r[0]) for r in tail]
    p = [min(r[2], max(r[0] - qi, 0)) for r, qi in zip(tail, q)]
    front = [max(r[0] - qi - pi, 0) for r, qi, pi in zip(tail, q, p)]
    assert b["queue"]["share"] == pytest.approx(np.median([qi / r[0] for qi, r in zip(q, tail)]), abs=1e-4)
    assert b["queue"]["p50_ms"] == pytest.approx(np.median(q) * 1e3, abs=1e-3)
    assert b["prefill"]["p50_ms"] == pytest.approx(np.median(p) * 1e3, abs=1e-3)
    assert b["frontend"]["p50_ms"] == pytest.approx(np.median(front) * 1e3, abs=1e-3)
    assert b["queue"]["share"] > 0.9  # under KV pressure the TTFT tail is the engine's queue
    md = __import__("triage.analyzers.report", fromlist=["to_markdown"]).to_markdown(vcap.report())
    assert "### Time to first token and between tokens" in md and "TTFT tail (13 requests" in md


def test_histograms_give_ttft_and_itl_when_the_engine_is_not_traced(tmp_path, raw):
    """vLLM without --otlp-traces-endpoint: only the gateway's spans and vLLM's /metrics. The gateway route's
    TTFT/ITL come from vLLM's histograms of the model its spans name."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from triage.sessions.offline import analyze

    (tmp_path / "otlp").mkdir()
    for f in (VLLM_CAPTURE / "otlp").iterdir():
        req = ExportTraceServiceRequest()
        req.ParseFromString(f.read_bytes())
        keep = [rs for rs in req.resource_spans
                if not any(a.key == "service.name" and a.value.string_value == "vllm" for a in rs.resource.attributes)]
        del req.resource_spans[:]
        req.resource_spans.extend(keep)
        if keep:
            (tmp_path / "otlp" / f.name).write_bytes(req.SerializeToString())
    shutil.copy(VLLM_CAPTURE / "metrics.prom.gz", tmp_path / "metrics.prom.gz")
    rep = analyze([tmp_path]).report()
    lat = rep["latency"][ROUTE]
    text = _metrics_text()
    assert lat["ttft_source"] == "metrics vllm:time_to_first_token_seconds"
    assert lat["itl_source"] == "metrics vllm:inter_token_latency_seconds"
    for q in (0.5, 0.95, 0.99):
        assert lat[f"ttft_p{round(q * 100)}_ms"] == pytest.approx(
            _raw_histogram_quantile(text, "vllm:time_to_first_token_seconds", q) * 1e3, abs=1e-3)
        assert lat[f"itl_p{round(q * 100)}_ms"] == pytest.approx(
            _raw_histogram_quantile(text, "vllm:inter_token_latency_seconds", q) * 1e3, abs=1e-3)
    assert lat["ttft_observations"] == 242  # the load's requests (the warm-up ones came before the window)
    assert "ttft_breakdown" not in rep


def test_old_vllm_names_give_the_same_figures(tmp_path):
    """vLLM before V1's renames: time_per_output_token_seconds (now inter_token_latency_seconds)."""
    from triage.analyzers.llm import token_latency_from_metrics
    from triage.sessions.offline import analyze

    text = _metrics_text()
    (tmp_path / "old.prom").write_text(text.replace("vllm:inter_token_latency_seconds",
                                                    "vllm:time_per_output_token_seconds"))
    (tmp_path / "new.prom").write_text(text)
    old = token_latency_from_metrics(analyze([tmp_path / "old.prom"]).store)["tiny-llama"]
    new = token_latency_from_metrics(analyze([tmp_path / "new.prom"]).store)["tiny-llama"]
    assert old["itl_source"] == "metrics vllm:time_per_output_token_seconds"
    assert {k: v for k, v in old.items() if k != "itl_source"} == {k: v for k, v in new.items() if k != "itl_source"}


def test_a_single_scrape_counts_from_the_server_start():
    """A one-off /metrics scrape of an older vLLM (the DataDog integration's fixture): quantiles of every
    observation since the server started, under the old ITL name."""
    from triage.analyzers.llm import token_latency_from_metrics
    from triage.collectors.metric_catalogue import KV_USAGE
    from triage.sessions.offline import analyze

    path = need(VLLM_CAPTURE.parent.parent / "metrics" / "real_scrapes" / "vllm_datadog_fixture_excerpt.prom")
    a = analyze([path])
    figures = token_latency_from_metrics(a.store)
    assert len(figures) == 1
    d = next(iter(figures.values()))
    assert d["itl_source"] == "metrics vllm:time_per_output_token_seconds"
    assert d["ttft_observations"] > 0 and d["ttft_p50_ms"] <= d["ttft_p95_ms"] <= d["ttft_p99_ms"]
    present = {m for (m,) in a.store.query("SELECT DISTINCT metric FROM samples")}
    assert {"vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"} <= present & set(KV_USAGE)


def test_histogram_figures_stay_off_routes_that_do_not_name_the_model(tmp_path):
    """A route whose spans name no model, next to vLLM's metrics, gets no TTFT/ITL from them."""
    import json

    from triage.sessions.offline import analyze

    shutil.copy(VLLM_CAPTURE / "metrics.prom.gz", tmp_path / "vllm.prom.gz")
    t0 = 1796135000 * 10**9
    spans = [{"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "GET /health", "kind": 2,
              "startTimeUnixNano": str(t0 + i * 10**8), "endTimeUnixNano": str(t0 + i * 10**8 + 10**6)}
             for i in range(5)]
    (tmp_path / "web.json").write_text(json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "web"}}]}, "scopeSpans": [{"spans": spans}]}]}))
    lat = analyze([tmp_path]).report()["latency"]
    assert list(lat) == ["web GET /health"]
    assert not any(k.startswith(("ttft", "itl")) for k in lat["web GET /health"])
