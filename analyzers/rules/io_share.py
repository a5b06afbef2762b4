"""io-share: calls to other services (feature store, vector DB, caches) take a large share of p95.

What: over each route's tail cohort, the median fraction of end-to-end time spent in the ``network`` stage
(CLIENT spans to anything but the model server, whose own spans explain it), with the dependencies that
cost the most.
Why: a remote lookup on the request path adds its own tail (and its retries) to every request; no model
optimisation can win that time back.
Fix: cache or prefetch the lookup, batch the calls, move the dependency closer, or hedge slow calls.
"""
from __future__ import annotations

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import MS, route_latency, stage_breakdown, tail_exemplars
from ..rule import Context, Need, Rule, Threshold

ID = "io-share"
TITLE = "Remote calls dominate p95"


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    breakdown = stage_breakdown(store)
    routes = {r: st["network"] for r, st in breakdown.items() if "network" in st}
    if not routes:
        return [not_evaluated(ID, TITLE, "no CLIENT spans to other services in the traces")]
    out = []
    for route, net in routes.items():
        if net["p95_share"] <= th["share"] or net["cohort"] < th["min_cohort"]:
            continue
        peers = store.query("""
            SELECT coalesce(s.peer, s.name), count(*), quantile_cont(t.self_ns, 0.95), sum(t.self_ns)
            FROM span_times t JOIN spans s USING (trace_id, span_id)
            JOIN requests q ON q.trace_id = t.trace_id AND q.root_id = t.root_id
            WHERE t.stage = 'network' AND q.route = ? GROUP BY 1 ORDER BY 4 DESC, 1 LIMIT 5""", [route])
        top = peers[0][0] if peers else "?"
        severity = "warning"  # the saving on p95 sets it (analyzers/impact.py)
        out.append(Finding(
            rule=ID, severity=severity, title=TITLE,
            summary=(f"{route}: calls to other services are {net['p95_share']:.0%} of end-to-end time in the p95 tail; "
                     f"most of it is {top} (p95 {peers[0][2] / MS:.1f} ms)." if peers else
                     f"{route}: calls to other services are {net['p95_share']:.0%} of the p95 tail."),
            scope={"route": route, "dependency": top},
            evidence={"p95_share": net["p95_share"], "threshold": th["share"], "cohort": net["cohort"],
                      "network_p50_ms": net["p50_ms"], "network_p95_ms": net["p95_ms"],
                      "dependencies": [{"peer": p, "calls": n, "p95_ms": round(q / MS, 3)} for p, n, q, _ in peers],
                      "exemplar_trace_ids": tail_exemplars(store, "network", route)},
            confidence=min(1.0, net["cohort"] / th["confident_cohort"]) * min(1.0, 0.5 + (net["p95_share"] - th["share"]) / th["share"]),
            remediations=scored(["cache-remote-lookups", "batch-remote-calls", "hedge-slow-calls"], ctx.constraints.scorecard),
            # the dependencies' share of the tail at p95, for the part a cache, batching or hedging removes
            impact_ms=net["p95_share"] * route_latency(store)[route]["p95_ms"] * th["removable_share"]))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="dependencies",
    thresholds={
        "removable_share": Threshold(0.7, "fraction", "part of a dependency's time a cache, batching or hedging "
                                     "removes: the misses and one round-trip stay"),
        "confident_cohort": Threshold(50, "requests", "tail requests for full confidence: the median share of 50 "
                                      "tail requests is within a few points of the population's"),
        "share": Threshold(0.30, "fraction", "network share of the tail end-to-end time above which it fires"),
        "min_cohort": Threshold(5, "requests", "smallest tail cohort to judge"),
    },
    causes=(
           ('tail-segment', 'the slow dependency is what the segment waits for'),),
    requires=(Need(stages=("network",)),),
    doc=__doc__, detect=detect)
