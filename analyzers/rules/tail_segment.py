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
from ..rule import Context, Need, Rule, Threshold

ID = "tail-segment"
TITLE = "One segment owns the tail"


def _size_bucket(n: int) -> str:
    if n <= 0:
        return "0"
    lo = 1 << (int(n).bit_length() - 1)
    return f"{lo}-{2 * lo - 1}"


def _requests(store) -> dict[str, np.ndarray]:
    """Per request: trace id, service, duration (ms), and its value in each dimension (None where absent)."""
    cols = store.columns("""
        SELECT trace_id, service, duration_ns / 1e6 AS ms, input_size, model, route,
               nullif(split_part(route, ' ', 2), '') AS method
        FROM requests""")
    size = cols["input_size"]
    known = ~np.ma.getmaskarray(size)
    buckets = np.full(len(size), None, dtype=object)
    values = np.ma.getdata(size)[known]
    if len(values):
        uniq, inverse = np.unique(values, return_inverse=True)
        buckets[known] = np.array([_size_bucket(int(v)) for v in uniq], dtype=object)[inverse]
    return {"ms": np.asarray(cols["ms"], dtype=float), "input size": buckets,
            **{c: cols[c] for c in ("trace_id", "service", "model", "route", "method")}}


def detect(ctx: Context, th: dict) -> list[Finding]:
    req = _requests(ctx.store)
    if not len(req["ms"]):
        return [not_evaluated(ID, TITLE, "no requests in the traces")]
    out = []
    for dim in ("input size", "model", "route", "method"):
        seg_of = req[dim]
        present = (seg_of != None) & (seg_of != "")  # noqa: E711 (element-wise on an object array)
        for service in dict.fromkeys(req["service"][present]):
            rows = present & (req["service"] == service)
            segs_here, ms_here, tid_here = seg_of[rows], req["ms"][rows], req["trace_id"][rows]
            segs = sorted(set(segs_here))
            if len(segs) < 2:
                continue
            tail_cut = float(np.percentile(ms_here, 95))
            in_tail_all = int((ms_here >= tail_cut).sum())
            for seg in segs:
                mask = segs_here == seg
                inside, rest = ms_here[mask], ms_here[~mask]
                if len(inside) < th["min_requests"] or len(rest) < th["min_requests"]:
                    continue
                p_in, p_rest = float(np.percentile(inside, 95)), float(np.percentile(rest, 95))
                ratio = p_in / p_rest if p_rest > 0 else 0.0
                if ratio < th["ratio"]:
                    continue
                slow = np.argsort(-inside, kind="stable")[:3]
                in_tail = int((inside >= tail_cut).sum())
                out.append(Finding(
                    rule=ID, severity="warning", title=TITLE,  # severity: set from the saving (analyzers/impact.py)
                    summary=(f"{service}: requests with {dim} {seg} have p95 {p_in:.1f} ms, {ratio:.1f}x the "
                             f"{p_rest:.1f} ms of all others ({len(inside)} of {len(ms_here)} requests, "
                             f"{in_tail} of the {in_tail_all} slowest 5%)."),
                    scope={"service": service, "dimension": dim, "segment": seg},
                    evidence={"segment_p95_ms": round(p_in, 3), "rest_p95_ms": round(p_rest, 3), "ratio": round(ratio, 2),
                              "segment_requests": int(len(inside)), "rest_requests": int(len(rest)),
                              "segment_share_of_tail": round(in_tail / max(1, in_tail_all), 3),
                              "exemplar_trace_ids": [str(t) for t in tid_here[mask][slow]]},
                    confidence=min(1.0, len(inside) / th["confident_requests"]) * min(1.0, ratio / (2 * th["ratio"]) + 0.5),
                    remediations=scored(["isolate-segment", "cap-or-chunk-inputs"], ctx.constraints.scorecard),
                    # if the segment behaved like the rest, the service's requests would all follow the
                    # rest's distribution: p95 would fall from the service's p95 to the rest's
                    impact_ms=max(tail_cut - p_rest, 0.0)))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="segmentation",
    thresholds={
        "ratio": Threshold(3.0, "ratio", "segment p95 over the p95 of all other requests"),
        "min_requests": Threshold(20, "requests", "requests needed in the segment and in the rest"),
        "confident_requests": Threshold(50, "requests", "segment requests for full confidence: a p95 from 50 requests "
                                        "rests on its 2-3 slowest, the fewest that are not one outlier"),
    },
    requires=(Need(requests=True),),
    doc=__doc__, detect=detect)
