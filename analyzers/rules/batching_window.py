"""batching-window: requests wait out the dynamic batcher's window, but batches stay near size 1.

What: at low load, queue time sits on a plateau at the batching window (``max_queue_delay_microseconds``
from the model's config.pbtxt when the capture has it, otherwise inferred from a queue-time distribution
that is nearly constant and nonzero), while batches hold about one request (Triton's
``nv_inference_count / nv_inference_exec_count``, or compute spans sharing a start in the traces).
Why: the batcher holds every request for the whole window hoping for company that rarely comes; the
window is added to every request's latency and buys no throughput. It looks like queueing, but it is
a timer, not contention, and it does not grow with load.
Fix: lower ``max_queue_delay_microseconds`` (to about the compute time of one batch, or what the latency
budget allows), set ``preferred_batch_size``, or disable dynamic batching for this traffic level.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.triton_model_config import batching

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import bucket_seconds, route_queue_sql, stage_breakdown, tail_exemplars
from ..metrics import BATCH_SIZE, triton_batch_size
from ..rule import Context, Need, Rule, Threshold
from ..stats import dispersion

ID = "batching-window"
TITLE = "Batching window adds latency without batching"


def _trace_batch_size(store) -> float | None:
    """Average number of Triton compute spans that start at the same instant (one batch execution)."""
    v = store.scalar("""SELECT avg(n) FROM (SELECT count(*) AS n FROM span_events WHERE name = 'COMPUTE_START'
                        GROUP BY ts_ns)""")
    return float(v) if v is not None else None


def _low_load_queue(store, route: str, th: dict) -> tuple[np.ndarray, float, float]:
    """Queue times (ms) of requests in the quieter half of time buckets (all of them when the traffic is
    steady), and the rates of both halves."""
    step = bucket_seconds(store, 30)
    rows = store.columns(f"{route_queue_sql(step)} SELECT queue_ns / 1e6 AS qms, b FROM rq", [route])
    if not len(rows["qms"]):
        return np.array([]), 0.0, 0.0
    q = np.asarray(rows["qms"], dtype=float)
    _, at, buckets = np.unique(np.asarray(rows["b"]), return_inverse=True, return_counts=True)
    n = buckets[at].astype(float)  # requests in each request's bucket
    if dispersion(buckets.astype(float)) < th["steady_dispersion"]:  # steady traffic: every request is at the same (low or not) load
        low = np.ones(len(n), dtype=bool)
    else:
        low = n <= np.median(np.unique(n))
    high = ~low if (~low).any() else low
    return q[low], float(n[low].mean() / step), float(n[high].mean() / step)


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    configs = batching(store)
    breakdown = stage_breakdown(store)
    queued = {r: st["queue"] for r, st in breakdown.items() if "queue" in st}
    if not queued:
        return [not_evaluated(ID, TITLE, "no queue time in the traces (Triton QUEUE_START events or queue spans)")]
    batch_metrics = triton_batch_size(store)
    # Triton's own counters when scraped, else the batch sizes seen in the traces
    batch = next(iter(batch_metrics.values())) if batch_metrics else _trace_batch_size(store)
    window_cfg = next((c for c in configs.values() if c.dynamic_batching), None)
    max_batch = window_cfg.max_batch_size if window_cfg else None
    limit = max(th["max_avg_batch"], th["max_batch_fill"] * max_batch) if max_batch else th["max_avg_batch"]
    findings = []
    for route, q in queued.items():
        if q["p95_share"] < th["min_queue_share"]:
            continue
        low, low_rate, high_rate = _low_load_queue(store, route, th)
        if len(low) < th["min_requests"]:
            continue
        p25, p50, p90 = (float(np.percentile(low, x)) for x in (25, 50, 90))
        if window_cfg is not None and window_cfg.max_queue_delay_us > 0:
            window_ms, source = window_cfg.max_queue_delay_us / 1000.0, f"max_queue_delay_microseconds in {window_cfg.path}"
        elif p50 >= th["min_window_ms"] and (p90 - p25) / p50 <= th["max_plateau_spread"]:
            window_ms, source = p50, "inferred: queue time is nearly constant at low load (a timer, not contention)"
        else:
            continue
        if not (th["min_ratio"] <= p50 / window_ms <= th["max_ratio"]):
            continue
        if batch is None or batch > limit:
            continue
        # load well below capacity: at the quiet rate, the device busy time the batches take (compute per
        # batch x batches per second, over the instances) must leave the queue empty most of the time,
        # or the queue time is contention, not the timer
        compute_ms = breakdown[route].get("inference", {}).get("p50_ms")
        instances = window_cfg.instances if window_cfg else 1
        utilization = (low_rate / max(batch, 1.0)) * compute_ms / 1000.0 / instances if compute_ms else None
        if utilization is None or utilization > th["max_utilization"]:
            continue
        # what the tail would lose: the timer it waits out (never more than the window), less the window
        # that stays after the fix
        saving = max(min(p50, window_ms) - th["target_window_ms"], 0.0)
        severity = "warning"  # set from the saving by analyzers/impact.py
        findings.append(Finding(
            rule=ID, severity=severity, title=TITLE,
            summary=(f"{route}: at low load ({low_rate:.0f} req/s) requests wait {p50:.1f} ms in the batch queue, "
                     f"the {window_ms:.1f} ms batching window, while batches average {batch:.2f} requests"
                     + (f" (max {max_batch})" if max_batch else "") + f", at a load using {utilization:.0%} of the "
                     f"model's capacity."),
            scope={"route": route, **({"model": window_cfg.model} if window_cfg else {})},
            evidence={"window_ms": round(window_ms, 3), "window_source": source,
                      "low_load_rate_rps": round(low_rate, 2), "high_load_rate_rps": round(high_rate, 2),
                      "low_load_requests": int(len(low)), "low_load_queue_ms": {"p25": round(p25, 3),
                      "p50": round(p50, 3), "p90": round(p90, 3)},
                      "avg_batch_size": round(batch, 3),
                      "avg_batch_source": "nv_inference_count / nv_inference_exec_count" if batch_metrics
                      else "compute spans per COMPUTE_START", "max_batch_size": max_batch,
                      "queue_p95_share": q["p95_share"], "queue_p95_ms": q["p95_ms"],
                      "compute_ms_per_batch": compute_ms, "utilization_at_low_load": round(utilization, 3),
                      "exemplar_trace_ids": tail_exemplars(store, "queue", route)},
            confidence=min(1.0, 0.6 + (0.3 if window_cfg else 0.0) + min(len(low) / 1000, 0.1)),
            remediations=scored(["lower-batch-window", "enable-dynamic-batching", "increase-instances"],
                                ctx.constraints.scorecard),
            impact_ms=saving))
    return findings


RULE = Rule(
    id=ID, title=TITLE, category="batching",
    thresholds={
        "min_queue_share": Threshold(0.10, "fraction", "queue share of the p95 tail below which the window does not matter"),
        "max_utilization": Threshold(0.5, "fraction", "busy share of the model at the quiet rate (compute per "
                                     "batch x batches/s) above which queue time is contention: an M/D/1 queue at 50% "
                                     "holds on average 0.25 waiting requests, so a plateau below it is the timer"),
        "min_requests": Threshold(20, "requests", "low-load requests needed to judge"),
        "steady_dispersion": Threshold(3.0, "variance/mean", "per-bucket request counts below this over-dispersion "
                                       "are steady Poisson traffic (~1): every request is at the same load"),
        "max_batch_fill": Threshold(0.2, "fraction", "batches filled to at most this share of max_batch_size count "
                                    "as 'not batching' (a batcher that batches at all fills far more under queueing)"),
        "min_ratio": Threshold(0.8, "ratio", "low-load median queue over the window, lower bound"),
        "max_ratio": Threshold(1.5, "ratio", "low-load median queue over the window, upper bound"),
        "max_avg_batch": Threshold(1.5, "requests", "average batch size that counts as 'near 1'"),
        "min_window_ms": Threshold(1.0, "ms", "smallest plateau taken for an inferred window"),
        "max_plateau_spread": Threshold(0.25, "ratio", "(p90 - p25) / p50 of low-load queue time for a plateau"),
        "target_window_ms": Threshold(1.0, "ms", "window assumed after the fix, for the saving estimate"),
    },
    causes=(
           ('queueing-growth', "the batcher's timer looks like queueing"),
           ('gpu-underutilized', 'batches of one leave the device idle'),),
    requires=(Need(stages=("queue",)),),
    metrics=BATCH_SIZE,
    doc=__doc__, detect=detect)
