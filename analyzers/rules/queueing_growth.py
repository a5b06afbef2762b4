"""queueing-growth: queue time rises with traffic (or keeps rising), i.e. the service is at capacity.

What: per time bucket, request rate vs mean per-request queue time (from trace stages, or from Triton's
cumulative queue counters). Fires when queueing is a real part of the p95 tail and it grows with the
request rate (rank correlation and high-load/low-load ratio), or grows over time at steady load;
pending-request gauges (Triton, vLLM, TGI) that climb are the same signal from metrics. Without a trend, it
also fires in its saturation form: the model server is busy most of the capture (the union of its compute
intervals) and queueing is a real part of the tail, at a steady rate.
Why: past the knee of the utilization curve, queueing delay grows without bound; p95 follows traffic.
Fix: add capacity that follows load (autoscale on queue depth), admission control, batching.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import PENDING, TRITON_QUEUE_TIME

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import bucket_seconds, route_latency, route_queue_sql, stage_breakdown, tail_exemplars
from ..metrics import QUEUE_PER_REQUEST, series, triton_queue_per_request
from ..rule import Context, Need, Rule, Threshold
from ..stats import dispersion, spearman, thirds_ratio

ID = "queueing-growth"
TITLE = "Queueing grows with traffic"


def _trend(t, rate, queue, th, counts=None) -> dict | None:
    t, rate, queue = (np.asarray(a, dtype=float) for a in (t, rate, queue))
    if len(t) < th["min_buckets"]:
        return None
    disp = dispersion(counts) if counts is not None else float("inf")
    corr_rate = spearman(rate, queue)
    growth_rate, q_low, q_high = thirds_ratio(rate, queue)
    rate_ratio, r_low, r_high = thirds_ratio(rate, rate)
    corr_time = spearman(t, queue)
    growth_time, q_first, q_last = thirds_ratio(t, queue)
    with_rate = (corr_rate >= th["min_correlation"] and growth_rate >= th["min_growth"]
                 and rate_ratio >= th["min_rate_ratio"] and disp >= th["min_dispersion"])
    over_time = corr_time >= th["min_correlation"] and growth_time >= th["min_growth"]
    return {"fires": with_rate or over_time, "with_rate": with_rate, "over_time": over_time,
            "buckets": int(len(t)), "rate_correlation": round(corr_rate, 3), "time_correlation": round(corr_time, 3),
            "queue_ms_low_rate": round(q_low, 3), "queue_ms_high_rate": round(q_high, 3),
            "growth_with_rate": round(growth_rate, 2), "rate_rps_low": round(r_low, 2), "rate_rps_high": round(r_high, 2),
            "queue_ms_first_third": round(q_first, 3), "queue_ms_last_third": round(q_last, 3),
            "growth_over_time": round(growth_time, 2),
            "rate_dispersion": None if counts is None else round(disp, 2)}


def _trace_buckets(store, route: str, step_s: float, min_requests: int):
    return store.query(f"""{route_queue_sql(step_s)}
        SELECT b, count(*) / {step_s}, avg(queue_ns) / 1e6, count(*) FROM rq
        GROUP BY b HAVING count(*) >= {min_requests} ORDER BY b""", [route])


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    breakdown = stage_breakdown(store)
    queued_routes = {r: st["queue"] for r, st in breakdown.items() if "queue" in st}
    triton = triton_queue_per_request(store)
    pending = series(store, PENDING)
    if not queued_routes and not triton and not pending:
        return [not_evaluated(ID, TITLE, "no queue time in the traces (Triton QUEUE_START events, queue spans, "
                                         "gen_ai.latency.time_in_queue) and no queue metrics")]
    findings = []
    step = bucket_seconds(store, 30)
    for route, q in queued_routes.items():
        if q["p95_share"] < th["min_queue_share"]:
            continue
        rows = _trace_buckets(store, route, step, int(th["min_bucket_requests"]))
        tr = _trend([r[0] * step for r in rows], [r[1] for r in rows], [r[2] for r in rows], th,
                    counts=[r[3] for r in rows])
        if not tr or not tr["fires"]:
            saturated = _saturated(ctx, route, q, th)
            if saturated:
                findings.append(saturated)
            continue
        exemplars = tail_exemplars(store, "queue", route)
        how = (f"mean queue time rises from {tr['queue_ms_low_rate']:.1f} ms at {tr['rate_rps_low']:.0f} req/s to "
               f"{tr['queue_ms_high_rate']:.1f} ms at {tr['rate_rps_high']:.0f} req/s (Spearman {tr['rate_correlation']:.2f})"
               if tr["with_rate"] else
               f"mean queue time keeps rising, {tr['queue_ms_first_third']:.1f} → {tr['queue_ms_last_third']:.1f} ms "
               f"over the window (Spearman with time {tr['time_correlation']:.2f})")
        severity = "warning"  # the saving on p95 sets it (analyzers/impact.py)
        findings.append(Finding(
            rule=ID, severity=severity, title=TITLE,
            summary=f"{route}: {how}; queueing is {q['p95_share']:.0%} of the p95 tail.",
            scope={"route": route},
            evidence={"source": "traces", "queue_p95_share": q["p95_share"], "queue_p50_ms": q["p50_ms"],
                      "queue_p95_ms": q["p95_ms"], "bucket_s": step, **tr, "exemplar_trace_ids": exemplars},
            confidence=min(1.0, max(tr["rate_correlation"], tr["time_correlation"])) * min(1.0, tr["buckets"] / 12),
            remediations=scored(["autoscale", "admission-control", "enable-dynamic-batching"], ctx.constraints.scorecard),
            # the tail's queue time (its share of the tail x p95) above what a right-sized queue holds
            # (the mean queue at the quietest third of the traffic)
            impact_ms=max(q["p95_share"] * route_latency(store)[route]["p95_ms"] - tr["queue_ms_low_rate"], 0.0)))
    if not queued_routes:  # traces say more (per route, per request); metrics only when they are all we have
        findings.extend(_from_metrics(ctx, th, triton, pending))
    return findings


_BUSY_SQL = """
WITH iv AS (  -- each request's compute on the model server: the end of its inference span, less its queue
    SELECT s.end_ns - (s.self_ns - s.queue_ns)::BIGINT AS a, s.end_ns AS b
    FROM span_times s JOIN requests r ON s.trace_id = r.trace_id AND s.root_id = r.root_id
    WHERE s.stage = 'inference' AND r.route = ? AND s.self_ns > s.queue_ns),
o AS (SELECT a, b, max(b) OVER (ORDER BY a, b ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach FROM iv)
SELECT sum(greatest(b - greatest(a, coalesce(reach, a)), 0)), count(*),  -- busy time: the union of the intervals
       (SELECT max(end_ns) - min(start_ns) FROM requests WHERE route = ?) FROM o
"""


def _saturated(ctx: Context, route: str, q: dict, th: dict) -> Finding | None:
    """Queueing at a steady rate: the model server is busy most of the time, so requests wait for it (queueing
    theory: at utilization rho the mean wait is rho / (2 (1 - rho)) service times for M/D/1, already 0.75 of a
    service time at 0.6 and 2 at 0.8, and the tail several times that). No trend is needed for this to hurt."""
    busy_ns, n, span_ns = ctx.store.query(_BUSY_SQL, [route, route])[0]
    if not n or not span_ns or busy_ns is None:
        return None
    rho = float(busy_ns) / float(span_ns)
    if rho < th["busy_utilization"]:
        return None
    p95 = route_latency(ctx.store)[route]["p95_ms"]
    service_ms = float(busy_ns) / n / 1e6
    rate = n / (span_ns / 1e9)
    # the tail's queue time, less the wait a server at the target utilization would still have
    target = th["target_utilization"]
    kept_ms = target / (2 * (1 - target)) * service_ms
    return Finding(
        rule=ID, severity="warning", title="Queueing: the model server is saturated",
        summary=(f"{route}: the model server is busy {rho:.0%} of the time at a steady {rate:.1f} req/s "
                 f"({service_ms:.1f} ms of compute per request), so requests wait for it: queueing is "
                 f"{q['p95_share']:.0%} of the p95 tail (queue p95 {q['p95_ms']:.1f} ms)."),
        scope={"route": route},
        evidence={"source": "traces", "utilization": round(rho, 3), "rate_rps": round(rate, 2),
                  "service_ms": round(service_ms, 3), "queue_p95_share": q["p95_share"], "queue_p50_ms": q["p50_ms"],
                  "queue_p95_ms": q["p95_ms"], "exemplar_trace_ids": tail_exemplars(ctx.store, "queue", route)},
        confidence=min(1.0, n / 200) * 0.8,
        remediations=scored(["autoscale", "admission-control", "enable-dynamic-batching"], ctx.constraints.scorecard),
        impact_ms=max(q["p95_share"] * p95 - kept_ms, 0.0))


def _from_metrics(ctx: Context, th: dict, triton, pending) -> list[Finding]:
    out = []
    for ts, rate, qms in triton:
        dt_s = float(np.median(np.diff(ts))) / 1000.0 if len(ts) > 1 else 1.0
        tr = _trend((ts - ts[0]) / 1000.0 if len(ts) else ts, rate, qms, th, counts=rate * dt_s)
        if tr and tr["fires"] and tr["queue_ms_high_rate"] >= th["min_queue_ms"]:
            out.append(Finding(
                rule=ID, severity="warning", title=TITLE,
                summary=(f"Triton queue time per request rises from {tr['queue_ms_low_rate']:.1f} ms at "
                         f"{tr['rate_rps_low']:.0f} req/s to {tr['queue_ms_high_rate']:.1f} ms at {tr['rate_rps_high']:.0f} req/s."),
                evidence={"source": "nv_inference_queue_duration_us / nv_inference_request_success", **tr},
                confidence=0.6, impact_ms=tr["queue_ms_high_rate"] - tr["queue_ms_low_rate"],
                remediations=scored(["autoscale", "admission-control", "enable-dynamic-batching"], ctx.constraints.scorecard)))
    for s in pending:
        if len(s.values) < th["min_buckets"]:
            continue
        tr = _trend((s.ts_ms - s.ts_ms[0]) / 1000.0, np.ones(len(s.values)), s.values, th)
        if tr and tr["over_time"] and tr["queue_ms_last_third"] >= th["pending_growth_min"]:
            out.append(Finding(
                rule=ID, severity="warning", title=TITLE,
                summary=(f"{s.key}: pending requests climb from {tr['queue_ms_first_third']:.1f} to "
                         f"{tr['queue_ms_last_third']:.1f} over the window (Spearman with time {tr['time_correlation']:.2f})."),
                evidence={"source": s.metric, "series": s.key, "pending_first_third": tr["queue_ms_first_third"],
                          "pending_last_third": tr["queue_ms_last_third"], "time_correlation": tr["time_correlation"]},
                confidence=0.5, impact_ms=0.0,
                remediations=scored(["autoscale", "admission-control"], ctx.constraints.scorecard)))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="capacity",
    thresholds={
        "min_queue_share": Threshold(0.10, "fraction", "queue share of the p95 tail below which growth is ignored"),
        "min_correlation": Threshold(0.6, "Spearman rho", "rank correlation of queue time with rate (or time)"),
        "min_growth": Threshold(2.0, "ratio", "queue time at high load (or late) over low load (or early)"),
        "min_rate_ratio": Threshold(1.5, "ratio", "busiest third of buckets over quietest third: traffic must "
                                    "really change (Poisson noise at steady load stays well below)"),
        "min_dispersion": Threshold(3.0, "variance/mean", "over-dispersion of per-bucket request counts that "
                                    "shows the rate changed (steady Poisson traffic is ~1)"),
        "min_buckets": Threshold(6, "buckets", "time buckets needed to judge a trend"),
        "min_bucket_requests": Threshold(5, "requests", "requests a bucket needs to count"),
        "min_queue_ms": Threshold(2.0, "ms", "queue time per request that matters (metrics path)"),
        "pending_growth_min": Threshold(2.0, "requests", "pending requests late in the window that matter"),
        "busy_utilization": Threshold(0.6, "fraction", "model-server busy time (union of compute intervals over "
                                      "the capture) from which a steady queue is contention: M/D/1 mean wait 0.75 "
                                      "service times at 0.6, 2 at 0.8"),
        "target_utilization": Threshold(0.5, "fraction", "utilization a right-sized server runs at (its wait, "
                                        "half a service time for M/D/1, is kept in the saving)"),
    },
    requires=(Need(stages=("queue",)),
              Need(metrics=TRITON_QUEUE_TIME, what="Triton queue metrics"),
              Need(metrics=PENDING, what="pending-request metrics")),
    metrics=QUEUE_PER_REQUEST + PENDING,
    doc=__doc__, detect=detect)
