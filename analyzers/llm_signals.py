"""What the LLM engine rules read (kv-cache-pressure, concurrency-cap, long-prompt-blocking, length-capped):
the engine's scheduler gauges aligned per scrape, its preemption count, one row per engine span, and the
engine queue's part of each LLM route's tail (the saving of the rules whose cause holds requests in that queue).

Gauges come from the one catalogue (``collectors.metric_catalogue``); of the names a quantity has had, the
first one present is used (old and new vLLM names are never added together). Per scrape timestamp, request counts are
summed over engines/models and KV usage is the highest of them (the fullest cache is the one that binds).
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import CACHE_CONFIG, KV_USAGE, PREEMPTIONS, PROMPT_TOKENS, RUNNING, WAITING

from . import metrics
from .latency import route_latency, stage_breakdown
from .stages import per_build

SCHEDULER = KV_USAGE + RUNNING + WAITING  # what scheduler reads
KV_FULL = CACHE_CONFIG + PROMPT_TOKENS  # what kv_full_from reads (cache_config, median_prompt_tokens)


def _first_present(store, names) -> list[metrics.Series]:
    for name in names:
        s = metrics.series(store, [name])
        if s:
            return s
    return []


def gauge(store, names, how: str = "sum") -> dict[int, float]:
    """{scrape ts_ms: value} of one concept, combined over its series (``sum`` or ``max``); NaN dropped."""
    out: dict[int, float] = {}
    for s in _first_present(store, names):
        for t, v in zip(s.ts_ms.tolist(), s.values.tolist()):
            if not np.isfinite(v):
                continue
            out[t] = (out.get(t, 0.0) + v) if how == "sum" else max(out.get(t, -np.inf), v)
    return out


@per_build
def scheduler(store) -> dict | None:
    """Per scrape (ts_ms ascending): ``kv`` usage (0..1), ``running``, ``waiting`` (NaN where a gauge is absent
    at that scrape); None without any of the three."""
    kv, run, wait = gauge(store, KV_USAGE, "max"), gauge(store, RUNNING), gauge(store, WAITING)
    ts = sorted(set(kv) | set(run) | set(wait))
    if not ts:
        return None
    col = lambda d: np.array([d.get(t, np.nan) for t in ts], dtype=float)  # noqa: E731
    return {"ts_ms": np.array(ts, dtype=np.int64), "kv": col(kv), "running": col(run), "waiting": col(wait),
            "kv_metric": next((n for n in KV_USAGE if metrics.series(store, [n])), None)}


def preemptions(store) -> float | None:
    """Preemptions during the window (counter increases, resets handled); None without the counter."""
    found = _first_present(store, PREEMPTIONS)
    if not found:
        return None
    return float(sum(metrics.counter_increase(s)[1].sum() for s in found))


_ATTR = "TRY_CAST(json_extract_string(s.attributes, '$.\"gen_ai.{}\"') AS DOUBLE)"
_FIN = "CASE WHEN isfinite({0}) AND {0} >= 0 THEN {0} END"


@per_build
def engine_requests(store) -> list[dict]:
    """One dict per request with an LLM engine span (the first in its trace): route, the request's own start
    ``request_start_ns``, arrival ``start_s`` (the engine span's start, vLLM's arrival time), ``ttft``, ``queue``,
    ``prefill``, ``decode`` (seconds), ``prompt_tokens``,
    ``output_tokens``, ``max_tokens`` and ``finish`` (gen_ai.response.finish_reasons, from any span of the
    trace, e.g. the gateway's client span) where present."""
    rows = store.query(f"""
        WITH raw AS (
            SELECT r.trace_id, r.root_id, s.start_ns,
                   {_ATTR.format('latency.time_to_first_token')} AS ttft,
                   {_ATTR.format('latency.time_in_queue')} AS queue,
                   {_ATTR.format('latency.time_in_model_prefill')} AS prefill,
                   {_ATTR.format('latency.time_in_model_decode')} AS decode,
                   coalesce({_ATTR.format('usage.prompt_tokens')}, {_ATTR.format('usage.input_tokens')}) AS pt,
                   coalesce({_ATTR.format('usage.completion_tokens')}, {_ATTR.format('usage.output_tokens')}) AS ot,
                   {_ATTR.format('request.max_tokens')} AS mt
            FROM spans s JOIN span_roots r ON r.trace_id = s.trace_id AND r.span_id = s.span_id
            WHERE contains(s.attributes, 'gen_ai.latency.time_to_first_token')),
        eng AS (SELECT trace_id, root_id, start_ns, {_FIN.format('ttft')} AS ttft, {_FIN.format('queue')} AS queue,
                       {_FIN.format('prefill')} AS prefill, {_FIN.format('decode')} AS decode, {_FIN.format('pt')} AS pt, {_FIN.format('ot')} AS ot,
                       {_FIN.format('mt')} AS mt FROM raw),
        first AS (SELECT * FROM eng WHERE ttft IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY trace_id, root_id ORDER BY start_ns, ttft) = 1),
        fin AS (SELECT trace_id, min(lower(json_extract_string(attributes, '$."gen_ai.response.finish_reasons"'))) AS f
                FROM spans WHERE contains(attributes, 'gen_ai.response.finish_reasons') GROUP BY trace_id)
        SELECT q.route, f.start_ns, f.ttft, f.queue, f.prefill, f.pt, f.ot, f.mt, fin.f, f.decode, q.start_ns
        FROM requests q JOIN first f ON f.trace_id = q.trace_id AND f.root_id = q.root_id
        LEFT JOIN fin ON fin.trace_id = q.trace_id ORDER BY f.start_ns""")
    return [{"route": r[0], "start_s": r[1] / 1e9, "ttft": r[2], "queue": r[3], "prefill": r[4],
             "prompt_tokens": r[5], "output_tokens": r[6], "max_tokens": r[7], "finish": r[8], "decode": r[9],
             "request_start_ns": r[10]}
            for r in rows]


def occupancy(reqs: list[dict]) -> list[tuple[float, int, int]] | None:
    """From the engine spans, exactly: the (duration s, running, waiting) pieces of the window, where a request
    waits from its arrival for ``time_in_queue`` and then runs for its prefill and decode. None when no request
    has all three. (The engine's gauges are snapshots from its last step's output: between two requests of a
    capped engine they read 0 running with requests waiting, so a scrape cannot tell a plateau reliably.)"""
    ev = []
    for r in reqs:
        if None in (r["queue"], r["prefill"], r["decode"]):
            continue
        a = r["start_s"]
        b = a + r["queue"]
        c = b + r["prefill"] + r["decode"]
        ev += [(a, "w", 1), (b, "w", -1), (b, "r", 1), (c, "r", -1)]
    if not ev:
        return None
    ev.sort(key=lambda e: (e[0], e[2]))  # ends before starts at the same instant
    out, run, wait, t_prev = [], 0, 0, ev[0][0]
    for t, kind, d in ev:
        if t > t_prev:
            out.append((t - t_prev, run, wait))
            t_prev = t
        if kind == "r":
            run += d
        else:
            wait += d
    return out


def at(sched: dict, key: str, t_s: float) -> float:
    """``sched[key]`` at the last scrape at or before ``t_s`` (NaN before the first)."""
    i = int(np.searchsorted(sched["ts_ms"], t_s * 1e3, side="right")) - 1
    return float(sched[key][i]) if i >= 0 else float("nan")


def kv_at(sched: dict, t_s: float) -> float:
    return at(sched, "kv", t_s)


def cache_config(store) -> dict | None:
    """``num_gpu_blocks`` and ``block_size`` from ``vllm:cache_config_info``'s labels (the last sample), or None."""
    found = metrics.series(store, CACHE_CONFIG)
    for s in reversed(found):
        try:
            blocks, size = int(s.labels["num_gpu_blocks"]), int(s.labels["block_size"])
        except (KeyError, TypeError, ValueError):
            continue
        if blocks > 0 and size > 0:
            return {"num_gpu_blocks": blocks, "block_size": size}
    return None


def median_prompt_tokens(store, reqs: list[dict]) -> tuple[float | None, str | None]:
    """The median prompt length in tokens: from the engine spans, else the engine's prompt-token histogram."""
    pts = [r["prompt_tokens"] for r in reqs if r["prompt_tokens"] is not None]
    if pts:
        return float(np.median(pts)), "spans"
    for model, h in metrics.histogram_quantiles(store, PROMPT_TOKENS, qs=(0.5,)).items():
        if h["q"].get(0.5) is not None:
            return float(h["q"][0.5]), h["metric"]
    return None, None


def kv_full_from(store, fraction: float, name: str, reqs: list[dict]) -> tuple[float, str]:
    """The KV usage from which the pool is full for admission, and why: ``fraction``, or less when the engine's
    pool is small (``vllm:cache_config_info``): full once the median prompt's blocks no longer fit
    (1 - ceil(median prompt / block_size) / num_gpu_blocks)."""
    cfg = cache_config(store)
    med, source = median_prompt_tokens(store, reqs)
    if cfg and med:
        need = int(np.ceil(med / cfg["block_size"]))
        fit = 1.0 - need / cfg["num_gpu_blocks"]
        if fit < fraction:
            return fit, (f"{fit:.0%}: the median prompt ({med:.0f} tokens, {source}) needs {need} of the "
                         f"{cfg['num_gpu_blocks']} KV blocks of {cfg['block_size']} tokens")
    return fraction, f"{fraction:.0%} ({name})"


def queue_tails(store, reqs: list[dict], min_share: float, calm) -> list[dict]:
    """Per LLM route (of ``reqs``) whose engine queue is at least ``min_share`` of its p95 tail: ``route``, its
    queue stage ``q`` (stage_breakdown), ``p95_ms``, ``kept_ms`` (the median queue of its requests for which
    ``calm(r)`` holds: what stays once the cause is gone, 0 when none), ``kept_n`` of them, and ``saving_ms``:
    the tail's queue time (queue share of the tail x p95) less ``kept_ms``, never negative."""
    breakdown = stage_breakdown(store)
    out = []
    for route in sorted({r["route"] for r in reqs}):
        q = breakdown.get(route, {}).get("queue")
        if not q or q["p95_share"] < min_share:
            continue
        p95 = route_latency(store)[route]["p95_ms"]
        kept = [r["queue"] for r in reqs if r["route"] == route and r["queue"] is not None and calm(r)]
        kept_ms = float(np.median(kept)) * 1e3 if kept else 0.0
        out.append({"route": route, "q": q, "p95_ms": p95, "kept_ms": kept_ms, "kept_n": len(kept),
                    "saving_ms": max(q["p95_share"] * p95 - kept_ms, 0.0)})
    return out


def counter_steps(store, names) -> tuple[np.ndarray, np.ndarray]:
    """A counter family's increases per scrape interval (the first of ``names`` present; resets handled),
    summed over its series: (interval end ts_ms ascending, increase). Empty arrays without the counter."""
    acc: dict[int, float] = {}
    for s in _first_present(store, names):
        for t, d in zip(*metrics.counter_increase(s)):
            if np.isfinite(d):
                acc[int(t)] = acc.get(int(t), 0.0) + float(d)
    ts = sorted(acc)
    return np.array(ts, dtype=np.int64), np.array([acc[t] for t in ts], dtype=float)


def histogram_steps(store, names) -> tuple[str | None, np.ndarray, np.ndarray, np.ndarray]:
    """A histogram family's observations per scrape interval, from its ``_sum`` and ``_count`` counters (the
    first of ``names`` with both): (name, interval end ts_ms, sum increase, count increase) over the intervals
    both have; (None, empty...) without it."""
    for name in names:
        ts_s, s = counter_steps(store, [f"{name}_sum"])
        ts_c, c = counter_steps(store, [f"{name}_count"])
        common, i_s, i_c = np.intersect1d(ts_s, ts_c, return_indices=True)
        if len(common):
            return name, common, s[i_s], c[i_c]
    return None, np.array([], dtype=np.int64), np.array([]), np.array([])
