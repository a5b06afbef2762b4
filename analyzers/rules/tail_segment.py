"""tail-segment: one segment of the traffic is much slower than the rest at p95.

What: requests are split by segment (input-size bucket from ``gen_ai.usage.input_tokens`` or an
app-specific size attribute, model, route within a service, HTTP method); a segment whose p95 is at
least ``ratio`` times the p95 of all other requests, with enough requests on both sides, fires.
Why: averages hide it, but a slow segment (long prompts, one model, one endpoint) owns the tail; the fix
is specific to it (chunking, a separate pool, a different batch policy) and the rest needs nothing.
Fix: route the segment to its own pool or queue, cap or chunk its inputs, or optimise its path.
"""
from __future__ import annotations

import numpy as np

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..rule import Context, Rule, Threshold

ID = "tail-segment"
TITLE = "One segment owns the tail"


def _size_bucket(n: int) -> str:
    if n <= 0:
        return "0"
    lo = 1 << (int(n).bit_length() - 1)
    return f"{lo}-{2 * lo - 1}"


def _segments(store) -> dict[str, list[tuple[str, str, float]]]:
    """dimension -> [(segment, trace_id, duration_ms)]"""
    rows = store.query("""
        SELECT q.trace_id, q.route, q.service, q.input_size, q.duration_ns / 1e6,
               (SELECT any_value(s.model) FROM span_roots k JOIN spans s USING (trace_id, span_id)
                 WHERE k.trace_id = q.trace_id AND k.root_id = q.root_id AND s.model IS NOT NULL) AS model,
               split_part(q.route, ' ', 2) AS method
        FROM requests q""")
    dims: dict[str, list] = {"input size": [], "model": [], "route": [], "method": []}
    for tid, route, service, size, ms, model, method in rows:
        if size is not None:
            dims["input size"].append((_size_bucket(size), tid, ms, service))
        if model:
            dims["model"].append((model, tid, ms, service))
        dims["route"].append((route, tid, ms, service))
        if method:
            dims["method"].append((method, tid, ms, service))
    return dims


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    n = store.scalar("SELECT count(*) FROM requests")
    if not n:
        return [not_evaluated(ID, TITLE, "no requests in the traces")]
    out = []
    for dim, items in _segments(store).items():
        by_service: dict[str, list] = {}
        for seg, tid, ms, service in items:
            by_service.setdefault(service, []).append((seg, tid, ms))
        for service, rows in by_service.items():
            segs = sorted({r[0] for r in rows})
            if len(segs) < 2:
                continue
            for seg in segs:
                inside = np.array([r[2] for r in rows if r[0] == seg])
                rest = np.array([r[2] for r in rows if r[0] != seg])
                if len(inside) < th["min_requests"] or len(rest) < th["min_requests"]:
                    continue
                p_in, p_rest = float(np.percentile(inside, 95)), float(np.percentile(rest, 95))
                ratio = p_in / p_rest if p_rest > 0 else 0.0
                if ratio < th["ratio"]:
                    continue
                slow = sorted((r for r in rows if r[0] == seg), key=lambda r: -r[2])[:3]
                all_ms = np.array([r[2] for r in rows])
                tail_cut = float(np.percentile(all_ms, 95))
                in_tail = sum(1 for r in rows if r[0] == seg and r[2] >= tail_cut)
                out.append(Finding(
                    rule=ID, severity="critical" if ratio >= th["critical_ratio"] else "warning", title=TITLE,
                    summary=(f"{service}: requests with {dim} {seg} have p95 {p_in:.1f} ms, {ratio:.1f}x the "
                             f"{p_rest:.1f} ms of all others ({len(inside)} of {len(rows)} requests, "
                             f"{in_tail} of the {sum(1 for r in rows if r[2] >= tail_cut)} slowest 5%)."),
                    scope={"service": service, "dimension": dim, "segment": seg},
                    evidence={"segment_p95_ms": round(p_in, 3), "rest_p95_ms": round(p_rest, 3), "ratio": round(ratio, 2),
                              "segment_requests": int(len(inside)), "rest_requests": int(len(rest)),
                              "segment_share_of_tail": round(in_tail / max(1, sum(1 for r in rows if r[2] >= tail_cut)), 3),
                              "exemplar_trace_ids": [r[1] for r in slow]},
                    confidence=min(1.0, len(inside) / 50) * min(1.0, ratio / (2 * th["ratio"]) + 0.5),
                    remediations=scored(["isolate-segment", "cap-or-chunk-inputs"], ctx.constraints.scorecard),
                    impact_ms=(p_in - p_rest) * len(inside) / len(rows)))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="segmentation",
    thresholds={
        "ratio": Threshold(3.0, "ratio", "segment p95 over the p95 of all other requests"),
        "critical_ratio": Threshold(6.0, "ratio", "ratio at which it is critical"),
        "min_requests": Threshold(20, "requests", "requests needed in the segment and in the rest"),
    },
    doc=__doc__, detect=detect)
