"""cold-start: the first requests after a start, scale-up or idle period are much slower than steady state.

What: per serving instance (``service.instance.id``, else service), the requests at its start (the first
``warmup_requests`` it handles, when the capture sees it start) and after an idle gap of ``idle_gap_s``,
against the instance's other requests, by median end-to-end latency.
Why: lazy model loading, JIT/graph compilation, empty caches and cold connection pools land on real users;
with autoscaling they recur at every scale-up, exactly when load is rising.
Fix: warm up instances before they take traffic (Triton ``model_warmup``, a readiness gate after warm-up
requests), keep a minimum of warm replicas, avoid scale-to-zero on latency-critical paths.
"""
from __future__ import annotations

import numpy as np

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..rule import Context, Need, Rule, Threshold

ID = "cold-start"
TITLE = "Cold starts: first requests are slow"


def detect(ctx: Context, th: dict) -> list[Finding]:
    cols = ctx.store.columns("""SELECT instance, trace_id, start_ns, duration_ns / 1e6 AS ms
                                FROM requests ORDER BY instance, start_ns""")
    if len(cols["ms"]) < th["min_requests"]:
        return [not_evaluated(ID, TITLE, f"fewer than {th['min_requests']:.0f} requests in the traces")]
    inst_of, trace_ids = cols["instance"], cols["trace_id"]
    all_starts = np.asarray(cols["start_ns"], dtype=np.int64)
    all_ms = np.asarray(cols["ms"], dtype=float)
    t_first = int(all_starts.min())
    out = []
    gap_ns = th["idle_gap_s"] * 1e9
    cuts = np.flatnonzero(inst_of[1:] != inst_of[:-1]) + 1  # sorted by instance: one run per instance
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(inst_of)]):
        inst = inst_of[lo]
        if hi - lo < th["min_requests"]:
            continue
        cold = np.zeros(hi - lo, dtype=bool)
        starts = all_starts[lo:hi]
        k = int(th["warmup_requests"])
        if starts[0] - t_first < gap_ns:  # the capture sees this instance from (near) its first request
            cold[:k] = True
        gaps = np.where(np.diff(starts) >= gap_ns)[0] + 1
        for g in gaps:
            cold[g:g + k] = True
        if cold.sum() < th["min_cold"] or (~cold).sum() < th["min_requests"]:
            continue
        ms = all_ms[lo:hi]
        warm_p50 = float(np.median(ms[~cold]))
        _extend_through_drain(cold, ms, th["ratio"] * warm_p50, int(th["drain_window"]))
        if (~cold).sum() < th["min_requests"]:
            continue
        cold_p50, warm_p50 = float(np.median(ms[cold])), float(np.median(ms[~cold]))
        ratio = cold_p50 / warm_p50 if warm_p50 > 0 else 0.0
        if ratio < th["ratio"]:
            continue
        cold_idx = np.flatnonzero(cold)
        slow = trace_ids[lo:hi][cold_idx[np.argsort(-ms[cold_idx], kind="stable")[:3]]]
        out.append(Finding(
            rule=ID, severity="warning", title=TITLE,  # severity: set from the saving (analyzers/impact.py)
            summary=(f"{inst}: the first requests after start or idle take {cold_p50:.0f} ms at the median, "
                     f"{ratio:.1f}x the steady {warm_p50:.0f} ms ({int(cold.sum())} cold requests, "
                     f"{len(gaps)} idle gap(s) ≥ {th['idle_gap_s']:.0f} s)."),
            scope={"instance": inst},
            evidence={"cold_p50_ms": round(cold_p50, 3), "warm_p50_ms": round(warm_p50, 3), "ratio": round(ratio, 2),
                      "cold_requests": int(cold.sum()), "idle_gaps": int(len(gaps)),
                      "cold_p95_ms": round(float(np.percentile(ms[cold], 95)), 3),
                      "exemplar_trace_ids": [str(t) for t in slow]},
            confidence=min(1.0, cold.sum() / 20) * 0.9,
            remediations=scored(["warm-up-instances", "autoscale"], ctx.constraints.scorecard),
            # were the cold requests warm, the instance's requests would follow the warm ones: p95 would
            # fall from the instance's p95 to the warm requests' p95
            impact_ms=max(float(np.percentile(ms, 95)) - float(np.percentile(ms[~cold], 95)), 0.0)))
    return out


def _extend_through_drain(cold, ms, slow_ms: float, window: int) -> None:
    """A slow start builds a queue that the requests after it wait through: they are part of the cold start
    (the queue it built draining), not of the steady state. Each cold run is extended while the median of the
    next ``window`` requests is still at least ``slow_ms``."""
    n = len(cold)
    ends = np.flatnonzero(cold[:-1] & ~cold[1:]) + 1
    for i in ends:
        while i < n and not cold[i] and np.median(ms[i:i + window]) >= slow_ms:
            cold[i] = True
            i += 1


RULE = Rule(
    id=ID, title=TITLE, category="lifecycle",
    thresholds={
        "ratio": Threshold(3.0, "ratio", "median of cold requests over the steady median"),
        "warmup_requests": Threshold(20, "requests", "requests counted as cold after a start or idle gap"),
        "idle_gap_s": Threshold(60, "s", "a pause without requests after which an instance counts as cold"),
        "min_cold": Threshold(5, "requests", "cold requests needed to judge"),
        "drain_window": Threshold(5, "requests", "requests whose median says the queue a cold start built is "
                                                  "still draining (one slow or fast request alone does not)"),
        "min_requests": Threshold(50, "requests", "requests an instance needs to judge"),
    },
    causes=(
           ('tail-segment', 'cold requests are what makes the segment slow'),),
    requires=(Need(requests=True),),
    doc=__doc__, detect=detect)
