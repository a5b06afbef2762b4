"""preprocessing-share: preprocessing (tokenize, resize, feature extraction) takes a large share of p95.

What: over each route's tail cohort (requests at or above the route's p95), the median fraction of
end-to-end time spent in the ``preprocess`` stage (exclusive time).
Why: preprocessing usually runs on the request path in Python, one request at a time; it does not
benefit from GPU batching and grows with input size, so it sets the tail while the model idles.
Fix: cache results, use a native/vectorized implementation, or move it off the request path.
"""
from __future__ import annotations

from ..finding import Finding, not_evaluated
from ..caching import caching_fix
from ..fixes import scored
from ..latency import TAIL_COHORT_SQL, stage_breakdown, MS
from ..rule import Context, Need, Rule, Threshold
from ..stats import spearman

ID = "preprocessing-share"
TITLE = "Preprocessing dominates p95"


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    breakdown = stage_breakdown(store)
    routes = {r: st["preprocess"] for r, st in breakdown.items() if "preprocess" in st}
    if not routes:
        return [not_evaluated(ID, TITLE, "no preprocessing spans (names like tokenize, preprocess, resize, "
                                         "decode_image, feature) in the traces")]
    findings = []
    for route, pre in routes.items():
        share, cohort = pre["p95_share"], pre["cohort"]
        if share <= th["share"] or cohort < th["min_cohort"]:
            continue
        ev = _evidence(store, route)
        severity = "warning"  # the saving on p95 sets it (analyzers/impact.py)
        p95 = ev["route_p95_ms"]
        size_note = ""
        if ev.get("input_size_correlation") is not None and ev["input_size_correlation"] >= th["size_correlation"]:
            size_note = f"; it grows with input size (Spearman {ev['input_size_correlation']:.2f})"
        findings.append(Finding(
            rule=ID, severity=severity, title=TITLE,
            summary=(f"{route}: preprocessing is {share:.0%} of end-to-end time in the p95 tail "
                     f"({ev['tail_preprocess_ms']:.1f} of {ev['tail_e2e_ms']:.1f} ms median, {cohort} requests ≥ "
                     f"p95 {p95:.1f} ms){size_note}."),
            scope={"route": route},
            evidence={"p95_share": share, "threshold": th["share"], "cohort": cohort,
                      "preprocess_p50_ms": pre["p50_ms"], "preprocess_p95_ms": pre["p95_ms"], **ev},
            confidence=min(1.0, cohort / th["confident_cohort"]) * min(1.0, 0.5 + (share - th["share"]) / th["share"]),
            remediations=[caching_fix(r, store, route, ctx.constraints.caching["fingerprint_keys"], share * p95)
                          if r["id"] == "cache-preprocessing" else r
                          for r in scored(["cache-preprocessing", "fast-tokenizer", "move-preprocessing"],
                                          ctx.constraints.scorecard)],
            # preprocessing's share of the tail, at the p95: what a fix that removes it saves there
            impact_ms=share * p95))
    return findings


def _evidence(store, route: str) -> dict:
    tail = store.query(f"""
        WITH tail AS ({TAIL_COHORT_SQL})
        SELECT t.trace_id, t.duration_ns, coalesce(rs.ns, 0) AS pre
        FROM tail t LEFT JOIN request_stages rs
          ON rs.trace_id = t.trace_id AND rs.root_id = t.root_id AND rs.stage = 'preprocess'
        WHERE t.route = ? ORDER BY pre DESC""", [route])
    import numpy as np

    pre = np.array([r[2] for r in tail], dtype=float)
    e2e = np.array([r[1] for r in tail], dtype=float)
    spans = store.query("""
        SELECT s.name, count(*), quantile_cont(t.self_ns, 0.95) FROM span_times t
        JOIN spans s USING (trace_id, span_id)
        JOIN requests q ON q.trace_id = t.trace_id AND q.root_id = t.root_id
        WHERE t.stage = 'preprocess' AND q.route = ? GROUP BY s.name ORDER BY sum(t.self_ns) DESC, s.name LIMIT 5""", [route])
    ev = {
        "route_p95_ms": round(float(store.scalar(
            "SELECT quantile_cont(duration_ns, 0.95) FROM requests WHERE route = ?", [route])) / MS, 3),
        "tail_preprocess_ms": round(float(np.median(pre)) / MS, 3) if len(pre) else 0.0,
        "tail_e2e_ms": round(float(np.median(e2e)) / MS, 3) if len(e2e) else 0.0,
        "spans": [{"name": n, "count": c, "p95_ms": round(p / MS, 3)} for n, c, p in spans],
        "exemplar_trace_ids": [r[0] for r in tail[:3]],
    }
    sized = store.query("""
        SELECT q.input_size, coalesce(rs.ns, 0) FROM requests q LEFT JOIN request_stages rs
          ON rs.trace_id = q.trace_id AND rs.root_id = q.root_id AND rs.stage = 'preprocess'
        WHERE q.route = ? AND q.input_size IS NOT NULL""", [route])
    if len(sized) >= 10:
        ev["input_size_correlation"] = round(spearman([r[0] for r in sized], [r[1] for r in sized]), 3)
        by_size = store.query("""
            SELECT q.input_size, count(*), quantile_cont(coalesce(rs.ns, 0), 0.95) FROM requests q
            LEFT JOIN request_stages rs ON rs.trace_id = q.trace_id AND rs.root_id = q.root_id AND rs.stage = 'preprocess'
            WHERE q.route = ? AND q.input_size IS NOT NULL GROUP BY 1 ORDER BY 1""", [route])
        if len(by_size) <= 12:
            ev["preprocess_p95_ms_by_input_size"] = {str(s): round(p / MS, 3) for s, _, p in by_size}
    return ev


RULE = Rule(
    id=ID, title=TITLE, category="preprocessing",
    thresholds={
        "share": Threshold(0.30, "fraction", "preprocess share of tail end-to-end time above which it fires"),
        "min_cohort": Threshold(5, "requests", "smallest tail cohort to judge"),
        "size_correlation": Threshold(0.5, "Spearman rho", "rank correlation of preprocessing time with input size "
                                      "from which the finding says it grows with input (a cost per token)"),
        "confident_cohort": Threshold(50, "requests", "tail requests for full confidence: the median share of 50 "
                                      "tail requests is within a few points of the population's"),
    },
    causes=(
           ('tail-segment', "preprocessing cost grows with the segment's inputs"),),
    requires=(Need(stages=("preprocess",)),),
    doc=__doc__, detect=detect)
