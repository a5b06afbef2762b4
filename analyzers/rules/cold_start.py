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
from ..rule import Context, Rule, Threshold

ID = "cold-start"
TITLE = "Cold starts: first requests are slow"


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    rows = store.query("""
        SELECT coalesce(json_extract_string(s.resource, '$."service.instance.id"'), q.service), q.route,
               q.trace_id, q.start_ns, q.duration_ns / 1e6
        FROM requests q JOIN spans s ON s.trace_id = q.trace_id AND s.span_id = q.root_id
        ORDER BY 1, q.start_ns""")
    if len(rows) < th["min_requests"]:
        return [not_evaluated(ID, TITLE, f"fewer than {th['min_requests']:.0f} requests in the traces")]
    t_first = min(r[3] for r in rows)
    out = []
    by_inst: dict[str, list] = {}
    for inst, route, tid, start, ms in rows:
        by_inst.setdefault(inst, []).append((route, tid, start, ms))
    gap_ns = th["idle_gap_s"] * 1e9
    for inst, reqs in by_inst.items():
        if len(reqs) < th["min_requests"]:
            continue
        cold = np.zeros(len(reqs), dtype=bool)
        starts = np.array([r[2] for r in reqs])
        k = int(th["warmup_requests"])
        if starts[0] - t_first < gap_ns:  # the capture sees this instance from (near) its first request
            cold[:k] = True
        gaps = np.where(np.diff(starts) >= gap_ns)[0] + 1
        for g in gaps:
            cold[g:g + k] = True
        if cold.sum() < th["min_cold"] or (~cold).sum() < th["min_requests"]:
            continue
        ms = np.array([r[3] for r in reqs])
        cold_p50, warm_p50 = float(np.median(ms[cold])), float(np.median(ms[~cold]))
        ratio = cold_p50 / warm_p50 if warm_p50 > 0 else 0.0
        if ratio < th["ratio"]:
            continue
        slow = sorted((reqs[i] for i in np.where(cold)[0]), key=lambda r: -r[3])[:3]
        out.append(Finding(
            rule=ID, severity="critical" if ratio >= th["critical_ratio"] else "warning", title=TITLE,
            summary=(f"{inst}: the first requests after start or idle take {cold_p50:.0f} ms at the median, "
                     f"{ratio:.1f}x the steady {warm_p50:.0f} ms ({int(cold.sum())} cold requests, "
                     f"{len(gaps)} idle gap(s) ≥ {th['idle_gap_s']:.0f} s)."),
            scope={"instance": inst},
            evidence={"cold_p50_ms": round(cold_p50, 3), "warm_p50_ms": round(warm_p50, 3), "ratio": round(ratio, 2),
                      "cold_requests": int(cold.sum()), "idle_gaps": int(len(gaps)),
                      "cold_p95_ms": round(float(np.percentile(ms[cold], 95)), 3),
                      "exemplar_trace_ids": [r[1] for r in slow]},
            confidence=min(1.0, cold.sum() / 20) * 0.9,
            remediations=scored(["warm-up-instances", "autoscale"], ctx.constraints.scorecard),
            impact_ms=(cold_p50 - warm_p50) * cold.sum() / len(reqs)))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="lifecycle",
    thresholds={
        "ratio": Threshold(3.0, "ratio", "median of cold requests over the steady median"),
        "critical_ratio": Threshold(10.0, "ratio", "ratio at which it is critical"),
        "warmup_requests": Threshold(20, "requests", "requests counted as cold after a start or idle gap"),
        "idle_gap_s": Threshold(60, "s", "a pause without requests after which an instance counts as cold"),
        "min_cold": Threshold(5, "requests", "cold requests needed to judge"),
        "min_requests": Threshold(50, "requests", "requests an instance needs to judge"),
    },
    doc=__doc__, detect=detect)
