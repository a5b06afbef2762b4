"""LLM serving latency: time to first token (TTFT) and inter-token latency (ITL) per route, and where the TTFT
tail goes (DESIGN.md §8: an LLM route's latency entry gains ``ttft_p50_ms``/``ttft_p95_ms``/``itl_p95_ms``...).

From spans, exact and per request: an LLM engine span (vLLM's ``llm_request``) carries, in float seconds,
``gen_ai.latency.time_to_first_token``, ``time_in_queue``, ``time_in_model_prefill``, ``time_in_model_decode``,
and its output tokens as ``gen_ai.usage.completion_tokens`` (older name) or ``gen_ai.usage.output_tokens``.
A request's figures are those of the first engine span in its trace (by start). Its ITL is its decode time
divided by its output tokens minus one: the mean gap between its tokens (spans carry no per-token times), for
requests with at least two output tokens; ITL percentiles are over requests. Percentiles are linear
(DuckDB ``quantile_cont``, numpy's default).

From metrics, when no span of a route carries them: the engine's TTFT and ITL histograms (the catalogue's
``TTFT`` and ``ITL``), quantiles of the observations made during the window (bucket increases, linear within
a bucket), or, in live mode, the median over the window of Prometheus' ``histogram_quantile`` series.
A histogram's ITL is per token, not per request. The entry says which source it used.

TTFT decomposition, over the TTFT tail cohort (requests whose TTFT is >= their route's TTFT p95):
``queue`` (time_in_queue), ``prefill`` (time_in_model_prefill) and ``frontend`` (TTFT - queue - prefill:
the engine's API server before its scheduler queue, a wait for the step in progress — the engine admits new
requests only between steps — and the first token's way back out), each as its median share of TTFT and
its median in ms.
"""
from __future__ import annotations

from triage.collectors.metric_catalogue import ITL, TTFT

from . import metrics
from .stages import per_build

METRICS = TTFT + ITL  # what the report's LLM latency reads (token_latency_from_metrics)

MS = 1e3  # seconds -> ms

_ATTR = "TRY_CAST(json_extract_string(s.attributes, '$.\"gen_ai.{}\"') AS DOUBLE)"
_FINITE = "CASE WHEN isfinite({0}) AND {0} >= 0 THEN {0} END"

# one row per request that has an LLM engine span: its route and the first engine span's figures (seconds)
_PER_REQUEST = f"""
WITH raw AS (
    SELECT r.trace_id, r.root_id, s.start_ns,
           {_ATTR.format('latency.time_to_first_token')} AS ttft,
           {_ATTR.format('latency.time_in_queue')} AS queue,
           {_ATTR.format('latency.time_in_model_prefill')} AS prefill,
           {_ATTR.format('latency.time_in_model_decode')} AS decode,
           coalesce({_ATTR.format('usage.completion_tokens')}, {_ATTR.format('usage.output_tokens')}) AS out_tokens
    FROM spans s JOIN span_roots r ON r.trace_id = s.trace_id AND r.span_id = s.span_id
    WHERE contains(s.attributes, 'gen_ai.latency.time_to_first_token')
),
eng AS (  -- a value that is not a finite, non-negative number (text, inf, NaN, -5) is none
    SELECT trace_id, root_id, start_ns,
           {_FINITE.format('ttft')} AS ttft, {_FINITE.format('queue')} AS queue,
           {_FINITE.format('prefill')} AS prefill, {_FINITE.format('decode')} AS decode,
           {_FINITE.format('out_tokens')} AS out_tokens
    FROM raw
),
first AS (SELECT * FROM eng WHERE ttft IS NOT NULL
          QUALIFY row_number() OVER (PARTITION BY trace_id, root_id ORDER BY start_ns, ttft) = 1)
SELECT q.route, q.trace_id, q.root_id, f.ttft, f.queue, f.prefill, f.decode,
       CASE WHEN f.out_tokens >= 2 AND f.decode IS NOT NULL THEN f.decode / (f.out_tokens - 1) END AS itl
FROM requests q JOIN first f ON f.trace_id = q.trace_id AND f.root_id = q.root_id
"""


@per_build
def token_latency(store) -> dict[str, dict]:
    """Per route: TTFT and ITL p50/p95/p99 in ms (``ttft_p50_ms`` ... ``itl_p99_ms``), the number of
    requests each is over, and ``token_latency_source``: ``spans`` or ``metrics <histogram name>``."""
    out: dict[str, dict] = {}
    for route, n_ttft, t50, t95, t99, n_itl, i50, i95, i99 in store.query(f"""
            WITH r AS ({_PER_REQUEST})
            SELECT route, count(ttft), quantile_cont(ttft, 0.5), quantile_cont(ttft, 0.95),
                   quantile_cont(ttft, 0.99), count(itl), quantile_cont(itl, 0.5), quantile_cont(itl, 0.95),
                   quantile_cont(itl, 0.99)
            FROM r GROUP BY route ORDER BY route"""):
        d = {"token_latency_source": "spans", "ttft_requests": n_ttft,
             "ttft_p50_ms": _ms(t50), "ttft_p95_ms": _ms(t95), "ttft_p99_ms": _ms(t99)}
        if n_itl:
            d.update(itl_requests=n_itl, itl_p50_ms=_ms(i50), itl_p95_ms=_ms(i95), itl_p99_ms=_ms(i99))
        out[route] = d
    return out


@per_build
def token_latency_from_metrics(store) -> dict[str, dict]:
    """Per served model (the histograms' ``model_name``): TTFT and ITL p50/p95/p99 in ms from the engine's own
    histograms, with the histogram used and its observation count."""
    out: dict[str, dict] = {}
    for kind, names in (("ttft", TTFT), ("itl", ITL)):
        for model, h in metrics.histogram_quantiles(store, names).items():
            d = out.setdefault(model, {})
            d[f"{kind}_source"] = f"metrics {h['metric']}"
            d[f"{kind}_observations"] = h["count"]
            for q, v in h["q"].items():
                d[f"{kind}_p{round(q * 100)}_ms"] = _ms(v)
        if any(f"{kind}_p95_ms" in d for d in out.values()):
            continue
        for name in names:  # live mode: Prometheus computed the quantiles
            for q in (0.5, 0.95, 0.99):
                for model, v in metrics.quantile_series_median(store, name, q).items():
                    d = out.setdefault(model, {})
                    d[f"{kind}_source"] = f"metrics {name} (median of the 1m histogram_quantile series)"
                    d[f"{kind}_p{round(q * 100)}_ms"] = _ms(v)
            if any(f"{kind}_p95_ms" in d for d in out.values()):
                break
    return out


def with_token_latency(store, latency: dict[str, dict]) -> dict[str, dict]:
    """``latency`` (route -> entry) with each LLM route's TTFT/ITL figures added: from its spans, else from the
    histograms of the model its requests name (``gen_ai.request.model``... = the histograms' ``model_name``).
    New dicts: the per-build cached entries are not changed."""
    spans = token_latency(store)
    out = {route: {**d, **spans.get(route, {})} for route, d in latency.items()}
    hist = token_latency_from_metrics(store)
    if not hist:
        return out
    models = dict(store.query("SELECT route, min(model) FROM requests GROUP BY route"))
    for route, d in out.items():
        if "ttft_p95_ms" in d or "itl_p95_ms" in d:
            continue
        figures = hist.get(models.get(route))  # only a route whose requests name the histograms' model
        if figures:
            d.update(figures)
    return out


@per_build
def ttft_breakdown(store) -> dict[str, dict]:
    """Per route with engine spans: the TTFT tail cohort (TTFT >= the route's TTFT p95) and, for each of
    ``frontend``, ``queue``, ``prefill``, its median share of TTFT and its median in ms over the cohort."""
    rows = store.query(f"""
        WITH r AS ({_PER_REQUEST}),
        parts AS (SELECT route, ttft, greatest(coalesce(queue, 0), 0) AS q,
                         greatest(coalesce(prefill, 0), 0) AS p FROM r),
        p95 AS (SELECT route, quantile_cont(ttft, 0.95) AS p95 FROM parts GROUP BY route),
        tail AS (SELECT a.*, least(q, ttft) AS qc, least(p, greatest(ttft - q, 0)) AS pc
                 FROM parts a JOIN p95 USING (route) WHERE a.ttft >= p95.p95 AND a.ttft > 0)
        SELECT route, count(*), median(ttft),
               median(greatest(ttft - qc - pc, 0) / ttft), median(greatest(ttft - qc - pc, 0)),
               median(qc / ttft), median(qc), median(pc / ttft), median(pc)
        FROM tail GROUP BY route ORDER BY route""")
    out = {}
    for route, n, ttft, fs, fm, qs, qm, ps, pm in rows:
        out[route] = {"cohort": n, "ttft_median_ms": _ms(ttft),
                      "frontend": {"share": round(fs, 4), "p50_ms": _ms(fm)},
                      "queue": {"share": round(qs, 4), "p50_ms": _ms(qm)},
                      "prefill": {"share": round(ps, 4), "p50_ms": _ms(pm)}}
    return out


def _ms(seconds) -> float | None:
    return None if seconds is None else round(float(seconds) * MS, 3)
