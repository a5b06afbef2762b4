"""The LLM rules prefill-decode-interference, prefix-cache-regression and spec-decode-acceptance, and slo-burn's
TTFT/ITL SLIs.

Inputs are generated, not typed: a small continuous-batching engine (below) schedules seeded arrivals step by
step as vLLM does (new prompts are admitted between steps; a step runs every running sequence's next token and
the admitted prompts' prefills), and its requests become vLLM ``llm_request`` spans made with the real
OpenTelemetry SDK and encoded by its OTLP encoder (``otlp/*.pb``, as the receiver gets them), and its counters
and histograms become /metrics scrapes in vLLM's exposition format (names, labels and HELP/TYPE lines as in the
real vllm-gateway-mixed capture), one per second with the scrape's timestamp. Expectations come from the
engine's own figures, not from triage. slo-burn's SLIs are checked on the real vllm-gateway-mixed capture
against the raw OTLP bodies."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import VLLM_CAPTURE, analysis_of, need, raw_otlp_spans

T0 = 1_800_000_000.0
LAB = 'engine="0",model_name="tiny"'
HELP = {  # as vLLM writes them (the real capture's metrics.prom)
    "vllm:prefix_cache_queries_total": ("counter", "Prefix cache queries, in terms of number of queried tokens."),
    "vllm:prefix_cache_hits_total": ("counter", "Prefix cache hits, in terms of number of cached tokens."),
    "vllm:gpu_prefix_cache_queries_total": ("counter", "GPU prefix cache queries, in terms of number of queried tokens."),
    "vllm:gpu_prefix_cache_hits_total": ("counter", "GPU prefix cache hits, in terms of number of cached tokens."),
    "vllm:prompt_tokens_total": ("counter", "Number of prefill tokens processed."),
    "vllm:num_requests_running": ("gauge", "Number of requests in model execution batches."),
    "vllm:inter_token_latency_seconds": ("histogram", "Histogram of inter-token latency in seconds."),
    "vllm:time_to_first_token_seconds": ("histogram", "Histogram of time to first token in seconds."),
    "vllm:spec_decode_num_drafts_total": ("counter", "Number of spec decoding drafts."),
    "vllm:spec_decode_num_draft_tokens_total": ("counter", "Number of draft tokens."),
    "vllm:spec_decode_num_accepted_tokens_total": ("counter", "Number of accepted tokens."),
    "sglang:spec_accept_rate": ("gauge", "The average acceptance rate of speculative decoding."),
}
BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


# --- the engine ---------------------------------------------------------------------------------------------

def engine(arrivals, prompts, outputs, *, step_s=0.01, prefill_per_token_s=0.0004, mixed=True, cached=None,
           per_seq_s=0.0):
    """Continuous batching, one step at a time. A prompt that arrived before a step starts is admitted to it;
    with ``mixed`` its prefill (``prefill_per_token_s`` per uncached token) runs inside that step, so every
    decoding sequence's next token waits for it; without (prefill on other instances) the step is only the
    decode and the prompt's first token comes ``prefill`` after its arrival. ``cached``: tokens of each
    prompt found in the prefix cache; ``per_seq_s``: what each running sequence adds to a step (0 on a GPU,
    where a decode step reads the weights once for all; more on a CPU, where it is compute-bound). Returns per
    request its figures (s) and every token's time."""
    n = len(arrivals)
    cached = cached if cached is not None else [0] * n
    reqs = [{"t": arrivals[i], "prompt": prompts[i], "out": outputs[i], "cached": cached[i], "tokens": []}
            for i in range(n)]
    own = [(r["prompt"] - r["cached"]) * prefill_per_token_s for r in reqs]
    # when a request can join the batch: on arrival (mixed), or once its prefill elsewhere gave its first token
    ready = [r["t"] + (0.0 if mixed else own[i]) for i, r in enumerate(reqs)]
    pending, running, t = list(range(n)), [], 0.0
    while pending or running:
        if not running and pending and min(ready[i] for i in pending) > t:
            t = min(ready[i] for i in pending)
        admit = [i for i in pending if ready[i] <= t]
        pending = [i for i in pending if i not in admit]
        end = t + step_s + per_seq_s * len(running) + (sum(own[i] for i in admit) if mixed else 0.0)
        for i in running:
            reqs[i]["tokens"].append(end)
        for i in admit:
            r = reqs[i]
            if mixed:  # prefilled in this step: its first token at the step's end
                r["queue"], r["prefill"] = t - r["t"], end - t
                r["tokens"].append(end)
            else:  # prefilled elsewhere, decoded here from this step on
                r["queue"], r["prefill"] = 0.0, own[i]
                r["tokens"].append(ready[i])
        running = [i for i in running + admit if len(reqs[i]["tokens"]) < reqs[i]["out"]]
        t = end
    for r in reqs:
        r["ttft"] = r["tokens"][0] - r["t"]
        r["decode"] = r["tokens"][-1] - r["tokens"][0]
        r["end"] = max(r["tokens"][-1], r["t"] + r["ttft"]) + 0.001
    return reqs


def poisson(rate, seconds, seed):
    rng = np.random.RandomState(seed)
    return np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.5)))[: int(rate * seconds)].tolist()


# --- writing what the engine did, as the real tools write it ------------------------------------------------

def write_spans(path, reqs):
    """vLLM's ``llm_request`` span per request, made with the OpenTelemetry SDK, written as an OTLP body."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "vllm"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("vllm.tracing.otel")
    for r in reqs:
        span = tracer.start_span("llm_request", kind=SpanKind.SERVER, start_time=int((T0 + r["t"]) * 1e9), attributes={
            "gen_ai.latency.time_in_queue": r["queue"], "gen_ai.latency.time_to_first_token": r["ttft"],
            "gen_ai.latency.time_in_model_prefill": r["prefill"], "gen_ai.latency.time_in_model_decode": r["decode"],
            "gen_ai.latency.time_in_model_inference": r["prefill"] + r["decode"],
            "gen_ai.latency.e2e": r["end"] - r["t"], "gen_ai.usage.prompt_tokens": r["prompt"],
            "gen_ai.usage.completion_tokens": r["out"], "gen_ai.request.max_tokens": r["out"]})
        span.end(end_time=int((T0 + r["end"]) * 1e9))
    provider.shutdown()
    (path / "otlp").mkdir(parents=True, exist_ok=True)
    (path / "otlp" / "00001-v1_traces.pb").write_bytes(encode_spans(exporter.get_finished_spans()).SerializeToString())
    return path


def write_scrapes(path, scrapes):
    """``scrapes``: (t s, {family: value | [observations] for a histogram (cumulative)}), one /metrics text each,
    concatenated as the capture's ``metrics.prom``: sample lines carry the scrape's timestamp in ms, HELP/TYPE
    once per family."""
    lines, seen = [], set()
    for t, values in scrapes:
        ms = int((T0 + t) * 1e3)
        for fam, v in values.items():
            kind, text = HELP[fam]
            if fam not in seen:
                lines += [f"# HELP {fam} {text}", f"# TYPE {fam} {kind}"]
                seen.add(fam)
            if kind != "histogram":
                lines.append(f"{fam}{{{LAB}}} {float(v)} {ms}")
                continue
            obs = np.asarray(v, dtype=float)
            for b in BOUNDS:
                lines.append(f'{fam}_bucket{{engine="0",le="{b}",model_name="tiny"}} {float((obs <= b).sum())} {ms}')
            lines += [f'{fam}_bucket{{engine="0",le="+Inf",model_name="tiny"}} {float(len(obs))} {ms}',
                      f"{fam}_sum{{{LAB}}} {float(obs.sum())} {ms}", f"{fam}_count{{{LAB}}} {float(len(obs))} {ms}"]
    (path / "metrics.prom").write_text("\n".join(lines) + "\n")
    return path


def engine_scrapes(reqs, families, every=1.0):
    """Per scrape time: cumulative ITL observations (each token gap at its token's time), prompt tokens
    prefilled (at each prompt's first token), TTFT observations, prefix-cache queries/hits, running count."""
    last = max(r["end"] for r in reqs)
    out = []
    for k in range(int(last / every) + 2):
        t = k * every
        done = [r for r in reqs if r["t"] + r["ttft"] <= t]
        v = {"vllm:inter_token_latency_seconds": [b - a for r in reqs for a, b in zip(r["tokens"], r["tokens"][1:])
                                                  if b <= t],
             "vllm:prompt_tokens_total": sum(r["prompt"] for r in done),
             "vllm:time_to_first_token_seconds": [r["ttft"] for r in done],
             "vllm:prefix_cache_queries_total": sum(r["prompt"] for r in done),
             "vllm:prefix_cache_hits_total": sum(r["cached"] for r in done),
             "vllm:num_requests_running": sum(r["t"] + r["queue"] <= t < r["tokens"][-1] for r in reqs)}
        out.append((t, {f: v[f] for f in families}))
    return out


def found(path, rule, toml=None):
    from triage.analyzers.constraints import find
    from triage.analyzers.rules import default_thresholds, threshold_units
    from triage.sessions.offline import analyze

    c = find([path], toml, default_thresholds(), threshold_units()) if toml else None
    a = analyze([path], constraints=c) if c else analyze([path])
    return [f for f in a.findings if f.rule == rule]


# --- prefill-decode-interference ------------------------------------------------------------------------

def interference_engine(mixed, seed=7, rate=2.0, seconds=60, prompts=(300, 900), outputs=(20, 40), per_seq_s=0.0):
    arr = poisson(rate, seconds, seed)
    rng = np.random.RandomState(seed + 1)
    return engine(arr, rng.randint(*prompts, len(arr)).tolist(), rng.randint(*outputs, len(arr)).tolist(), mixed=mixed,
                  per_seq_s=per_seq_s)


def _itl_groups(reqs, share):
    """Independently of triage: each request's mean ITL, split by whether others' prefill steps took at least
    ``share`` of its decode (those steps are the ones whose end is a token of it and whose start had a prefill)."""
    over, clear = [], []
    for i, r in enumerate(reqs):
        lo, hi = r["tokens"][0], r["tokens"][-1]
        pre = sum(max(0.0, min(o["t"] + o["ttft"], hi) - max(o["t"] + o["ttft"] - o["prefill"], lo))
                  for j, o in enumerate(reqs) if j != i)
        itl = r["decode"] / (r["out"] - 1)
        if pre >= share * r["decode"]:
            over.append(itl)
        elif pre == 0:
            clear.append(itl)
    return over, clear


def test_prefill_decode_interference_positive_from_spans(tmp_path):
    reqs = interference_engine(mixed=True)
    over, clear = _itl_groups(reqs, 0.05)
    assert np.median(over) > 1.5 * np.median(clear)  # the engine's own figures: prefills stretch the steps
    (f,) = found(write_spans(tmp_path, reqs), "prefill-decode-interference")
    assert f.evaluated and f.severity in ("warning", "critical"), f.summary
    assert f.evidence["itl_ms_p50_clear"] == pytest.approx(10.0, abs=0.5)  # a clear step is the 10 ms decode
    assert f.evidence["itl_ms_p50_during_prefill"] > 15
    assert f.evidence["during_prefill"] >= 10 and f.evidence["clear"] >= 10
    assert f.impact_ms > 0


def test_prefill_decode_interference_negative_when_prefill_runs_elsewhere(tmp_path):
    """The same arrivals with prefill on other instances (disaggregated): every decode step is 10 ms."""
    assert found(write_spans(tmp_path, interference_engine(mixed=False)), "prefill-decode-interference") == []


def test_prefill_decode_interference_negative_when_only_the_batch_grows(tmp_path):
    """Prefill elsewhere, but each running sequence adds 10 ms to a step (a compute-bound engine): requests that
    decode beside a newcomer are slower because the batch is larger, not because of its prefill."""
    reqs = interference_engine(mixed=False, per_seq_s=0.01)
    over, clear = _itl_groups(reqs, 0.05)
    assert np.median(over) > 1.5 * np.median(clear)  # unmatched, the groups differ by more than the threshold
    assert found(write_spans(tmp_path, reqs), "prefill-decode-interference") == []


def test_prefill_decode_interference_from_metrics_alone(tmp_path):
    """Per 1 s scrape interval a mean ITL: intervals without a prefill need long decodes and sparse arrivals
    (long prompts, as retrieval-augmented requests have, so an interval's one prefill shows in its mean)."""
    reqs = interference_engine(mixed=True, rate=0.3, seconds=150, prompts=(1500, 3000), outputs=(150, 300))
    fams = ("vllm:inter_token_latency_seconds", "vllm:prompt_tokens_total", "vllm:num_requests_running")
    (f,) = found(write_scrapes(tmp_path, engine_scrapes(reqs, fams)), "prefill-decode-interference")
    assert f.evaluated and "scrape intervals" in f.evidence["source"]
    assert f.evidence["itl_ratio_like_batches"] >= 1.5


def test_prefill_decode_interference_silent_on_vllm_gateway_mixed():
    """The tiny model's prefills are 15-25 ms against ~5 ms decode steps (README): they do not stall decodes
    measurably at like batch sizes."""
    need(VLLM_CAPTURE)
    assert [f for f in analysis_of(str(VLLM_CAPTURE)).findings
            if f.rule == "prefill-decode-interference" and f.severity in ("critical", "warning")] == []


# --- prefix-cache-regression ----------------------------------------------------------------------------

def prefix_engine(late_hit, seed=3, rate=2.0, late_rate=None):
    """Prompts of 1,000 tokens; 75% of each found in the prefix cache for the first two thirds of a minute,
    ``late_hit`` after (e.g. a template edited); ``late_rate`` raises the load in the last third."""
    arr = poisson(rate, 40, seed) + [40 + a for a in poisson(late_rate or rate, 20, seed + 1)]
    cached = [750 if a < 40 else int(late_hit * 1000) for a in arr]
    return engine(arr, [1000] * len(arr), [16] * len(arr), cached=cached)


PREFIX = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")


def test_prefix_cache_regression_positive(tmp_path):
    reqs = prefix_engine(late_hit=0.1)
    write_scrapes(write_spans(tmp_path, reqs), engine_scrapes(reqs, PREFIX))
    (f,) = found(tmp_path, "prefix-cache-regression")
    assert f.evaluated and f.severity in ("warning", "critical"), f.summary
    assert f.evidence["hit_rate_early"] == pytest.approx(0.75, abs=0.01)
    assert f.evidence["hit_rate_late"] == pytest.approx(0.10, abs=0.05)
    # the engine's own prefill times (a step's, with any prompt admitted beside): p95 in the last third of the
    # scraped window less p95 in the first
    end = int(max(r["end"] for r in reqs)) + 1
    pre = lambda sel: np.percentile([r["prefill"] for r in reqs if sel(r["t"])], 95) * 1e3  # noqa: E731
    rise = pre(lambda t: t > end - end / 3) - pre(lambda t: t <= end / 3)
    assert rise > (900 - 250) * 0.4 * 0.9  # at least the one prompt's extra 650 uncached tokens
    assert f.evidence["prefill_rise_ms"] == pytest.approx(rise, abs=1.0)


def test_prefix_cache_regression_negative_when_the_rate_holds(tmp_path):
    """TTFT rises from more load, not from the cache: the hit rate stays at 75%."""
    reqs = prefix_engine(late_hit=0.75, late_rate=12.0)
    assert np.median([r["ttft"] for r in reqs if r["t"] > 40]) > 1.2 * np.median([r["ttft"] for r in reqs if r["t"] < 20])
    write_scrapes(write_spans(tmp_path, reqs), engine_scrapes(reqs, PREFIX))
    assert found(tmp_path, "prefix-cache-regression") == []


def test_prefix_cache_regression_old_names_and_ttft_histogram(tmp_path):
    """Metrics only, vLLM's older names (gpu_prefix_cache_*), TTFT from the histogram's mean per third."""
    reqs = prefix_engine(late_hit=0.1)
    scrapes = [(t, {"vllm:gpu_prefix_cache_queries_total": v["vllm:prefix_cache_queries_total"],
                    "vllm:gpu_prefix_cache_hits_total": v["vllm:prefix_cache_hits_total"],
                    "vllm:time_to_first_token_seconds": v["vllm:time_to_first_token_seconds"]})
               for t, v in engine_scrapes(reqs, PREFIX + ("vllm:time_to_first_token_seconds",))]
    (f,) = found(write_scrapes(tmp_path, scrapes), "prefix-cache-regression")
    assert f.evaluated and f.evidence["ttft_source"].startswith("vllm:time_to_first_token_seconds")
    assert f.evidence["hit_rate_early"] == pytest.approx(0.75, abs=0.01)


def test_prefix_cache_regression_not_evaluated_on_too_few_lookups(tmp_path):
    reqs = engine([1.0, 20.0, 40.0, 55.0], [1000] * 4, [16] * 4, cached=[750, 750, 100, 100])
    write_scrapes(write_spans(tmp_path, reqs), engine_scrapes(reqs, PREFIX))
    (f,) = found(tmp_path, "prefix-cache-regression")
    assert not f.evaluated and "fewer than 4096" in f.summary


def test_real_vllm_scrape_alone_is_not_enough_for_the_trend_rules():
    """A real vLLM /metrics text (DataDog's fixture: prefix-cache counters, prompt tokens, the old ITL name) is one
    scrape: no earlier level, no interval to compare, so both rules say why they were not evaluated."""
    from triage.sessions.offline import analyze

    path = need(VLLM_CAPTURE.parent.parent / "metrics" / "real_scrapes" / "vllm_datadog_fixture_excerpt.prom")
    got = {f.rule: f for f in analyze([path]).findings}
    assert not got["prefix-cache-regression"].evaluated and "single scrape" in got["prefix-cache-regression"].summary
    assert not got["prefill-decode-interference"].evaluated
    assert "two or more scrapes" in got["prefill-decode-interference"].summary


# --- spec-decode-acceptance -----------------------------------------------------------------------------

def spec_scrapes(path, accept, drafts_per_s=200, k=4, seconds=30):
    """An engine proposing ``k`` draft tokens per draft, of which ``accept`` are accepted on average."""
    return write_scrapes(path, [(t, {"vllm:spec_decode_num_drafts_total": drafts_per_s * t,
                                     "vllm:spec_decode_num_draft_tokens_total": drafts_per_s * k * t,
                                     "vllm:spec_decode_num_accepted_tokens_total": round(drafts_per_s * k * t * accept)})
                                for t in range(seconds + 1)])


def test_spec_decode_acceptance_positive(tmp_path):
    (f,) = found(spec_scrapes(tmp_path, 0.2), "spec-decode-acceptance")
    assert f.severity == "warning" and f.evidence["acceptance_rate"] == pytest.approx(0.2)
    assert f.evidence["draft_tokens"] == 200 * 4 * 30 and f.evidence["mean_acceptance_length"] == pytest.approx(1.8)
    assert f.evidence["draft_length"] == 4


def test_spec_decode_acceptance_negative(tmp_path):
    assert found(spec_scrapes(tmp_path, 0.7), "spec-decode-acceptance") == []


def test_spec_decode_acceptance_not_evaluated_on_few_drafts(tmp_path):
    (f,) = found(spec_scrapes(tmp_path, 0.2, drafts_per_s=1, seconds=10), "spec-decode-acceptance")
    assert not f.evaluated and "fewer than 1000" in f.summary


def test_spec_decode_acceptance_from_sglang_gauge(tmp_path):
    (f,) = found(write_scrapes(tmp_path, [(t, {"sglang:spec_accept_rate": 0.3}) for t in range(10)]),
                 "spec-decode-acceptance")
    assert f.evidence["acceptance_rate"] == pytest.approx(0.3) and "sglang:spec_accept_rate" in f.evidence["source"]


def test_spec_decode_acceptance_not_evaluated_without_speculation():
    (f,) = [x for x in analysis_of(str(need(VLLM_CAPTURE))).findings if x.rule == "spec-decode-acceptance"]
    assert not f.evaluated and "speculative-decoding metrics" in f.summary


# --- slo-burn on TTFT and ITL SLOs ----------------------------------------------------------------------

def _raw_engine_figures():
    """(ttft s, itl s or None) per vLLM llm_request span of the capture, from the raw OTLP bodies."""
    out = []
    for sp in raw_otlp_spans(VLLM_CAPTURE):
        a = {x.key: x.value for x in sp.attributes}
        if "gen_ai.latency.time_to_first_token" in a:
            ot = a["gen_ai.usage.completion_tokens"].int_value
            dec = a["gen_ai.latency.time_in_model_decode"].double_value
            out.append((a["gen_ai.latency.time_to_first_token"].double_value, dec / (ot - 1) if ot >= 2 else None))
    return out


def test_slo_burn_on_ttft_and_itl_slos(tmp_path):
    toml = tmp_path / "triage.toml"
    toml.write_text("[slo]\nttft_p95_ms = 500\nitl_p95_ms = 4\n")
    figs = _raw_engine_figures()
    bad_ttft = np.mean([t > 0.5 for t, _ in figs])
    bad_itl = np.mean([i > 0.004 for _, i in figs if i is not None])
    burns = {f.scope["sli"]: f for f in found(str(VLLM_CAPTURE), "slo-burn", str(toml))}
    assert burns["ttft"].evidence["bad_fraction_long"] == pytest.approx(bad_ttft, abs=1e-4)
    assert burns["itl"].evidence["bad_fraction_long"] == pytest.approx(bad_itl, abs=1e-4)
    assert burns["ttft"].evidence["requests_long"] == len(figs)
    assert burns["ttft"].severity == ("critical" if bad_ttft / 0.05 >= 14.4 and
                                      burns["ttft"].evidence["burn_rate_short"] >= 14.4 else "warning")


def test_slo_burn_quiet_when_the_ttft_slo_holds(tmp_path):
    toml = tmp_path / "triage.toml"
    toml.write_text("[slo]\nttft_p95_ms = 60000\n")
    assert max(t for t, _ in _raw_engine_figures()) < 60
    assert found(str(VLLM_CAPTURE), "slo-burn", str(toml)) == []
