"""retry-spiral: timeouts drive retries, retries add load, load drives more timeouts.

What: client calls retried (several CLIENT spans for one logical call, or ``http.request.resend_count`` > 0),
with timeouts/429/503/504 behind them, where retries track latency over time or concentrate in the slow tail,
or amplify the load reaching the server.
Why: every retry is extra work for an already saturated server; without a budget, retries turn a slowdown
into an outage (a reliability death spiral).
Fix: retry budgets, exponential backoff with jitter, admission control, deadline propagation.
"""
from __future__ import annotations

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import MS, bucket_seconds
from ..rule import Context, Need, Rule, Threshold
from ..stats import spearman

ID = "retry-spiral"
TITLE = "Retry spiral: timeouts drive retries"

CALLS_SQL = """
    WITH c AS (
        SELECT s.trace_id, s.parent_span_id, s.name, s.peer, k.root_id, s.start_ns, s.duration_ns,
               coalesce(s.resend_count, 0) AS resend,
               (s.http_status IN (408, 429, 503, 504)
                OR (s.status_code = 2 AND regexp_matches(lower(coalesce(s.status_message, '')), 'timeout|timed out|deadline'))
                OR regexp_matches(lower(coalesce(json_extract_string(s.attributes, '$."error.type"'), '')), 'timeout|deadline'))
                 AS overload_failure,
               (s.status_code = 2 OR coalesce(s.http_status, 0) >= 400) AS failed
        FROM spans s JOIN span_roots k USING (trace_id, span_id) WHERE s.kind = 3
    )
    SELECT trace_id, root_id, parent_span_id, name, min(peer) AS peer, count(*) AS attempts,
           greatest(count(*) - 1, max(resend)) AS retries, sum(overload_failure::INT) AS overload_failures,
           sum(CASE WHEN failed THEN duration_ns ELSE 0 END) AS failed_ns, min(start_ns) AS start_ns
    FROM c GROUP BY trace_id, root_id, parent_span_id, name
"""


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    n_client = store.scalar("SELECT count(*) FROM spans WHERE kind = 3")
    if not n_client:
        return [not_evaluated(ID, TITLE, "no CLIENT spans, so retries cannot be seen in the traces")]
    totals = store.query(f"""
        WITH calls AS ({CALLS_SQL})
        SELECT name, min(peer), count(*), sum(attempts), sum(retries), sum(overload_failures)
        FROM calls GROUP BY name ORDER BY sum(retries) DESC, name""")
    findings = []
    for name, peer, calls, attempts, retries, overload in totals:
        ratio = retries / calls if calls else 0.0
        amplification = attempts / calls if calls else 1.0
        if ratio < th["min_retry_ratio"]:
            continue
        ev = _evidence(store, name, th)
        tail_enrichment = ev["retry_rate_in_tail"] / max(ev["retry_rate_outside_tail"], 1e-9) if ev["retry_rate_in_tail"] else 0.0
        tracks_latency = ev["latency_correlation"] >= th["min_correlation"]
        in_tail = tail_enrichment >= th["tail_enrichment"]
        amplifies = amplification >= th["amplification"]
        if not (tracks_latency or in_tail or amplifies):
            continue
        reasons = []
        if amplifies:
            reasons.append(f"{amplification:.2f} attempts per call reach {peer or name}")
        if tracks_latency:
            reasons.append(f"retry rate tracks p95 over time (Spearman {ev['latency_correlation']:.2f})")
        if in_tail:
            reasons.append(f"{ev['retry_rate_in_tail']:.0%} of p95-tail requests retried vs {ev['retry_rate_outside_tail']:.0%} of the rest")
        severity = "warning"  # the saving on p95 sets it (analyzers/impact.py)
        findings.append(Finding(
            rule=ID, severity=severity, title=TITLE,
            summary=(f"{name}: {retries} retries for {calls} calls ({ratio:.0%}), {overload} timeouts/429/503/504; "
                     + "; ".join(reasons) + "."),
            scope={"call": name, "peer": peer},
            evidence={"calls": calls, "attempts": attempts, "retries": retries, "retry_ratio": round(ratio, 4),
                      "amplification": round(amplification, 3), "overload_failures": overload,
                      "tail_enrichment": round(tail_enrichment, 2), **ev},
            confidence=min(1.0, 0.4 + 0.2 * sum((tracks_latency, in_tail, amplifies)) + min(ratio, 0.2)),
            remediations=scored(["retry-budget", "backoff-jitter", "admission-control", "deadline-propagation"],
                                ctx.constraints.scorecard),
            impact_ms=ev["wasted_ms_p50_in_retried"]))
    return findings


def _evidence(store, name: str, th: dict) -> dict:
    step_ns = int(bucket_seconds(store, 30) * 1e9)
    per_request = f"""
        WITH calls AS ({CALLS_SQL} ), rr AS (
            SELECT root_id, trace_id, sum(retries) AS retries, sum(failed_ns) AS failed_ns FROM calls
            WHERE name = ? GROUP BY ALL),
        p AS (SELECT route, quantile_cont(duration_ns, 0.95) AS p95 FROM requests GROUP BY route)
        SELECT q.trace_id, q.start_ns, q.duration_ns, coalesce(rr.retries, 0), coalesce(rr.failed_ns, 0),
               q.duration_ns >= p.p95
        FROM requests q JOIN p USING (route)
        LEFT JOIN rr ON rr.trace_id = q.trace_id AND rr.root_id = q.root_id"""
    rows = store.query(per_request, [name])
    tail = [r for r in rows if r[5]]
    rest = [r for r in rows if not r[5]]
    retried = sorted((r for r in rows if r[3] > 0), key=lambda r: -r[2])
    buckets = store.query(f"""
        WITH x AS ({per_request}), t0 AS (SELECT min(start_ns) t0 FROM requests)
        SELECT (start_ns - t0) // {step_ns} AS b, avg((retries > 0)::INT), quantile_cont(duration_ns, 0.95), count(*)
        FROM x, t0 GROUP BY b HAVING count(*) >= {int(th["min_bucket_requests"])} ORDER BY b""".replace("x AS (", "x(trace_id, start_ns, duration_ns, retries, failed_ns, tail) AS (", 1), [name])
    import numpy as np

    wasted = [r[4] for r in retried]
    return {
        "retry_rate_in_tail": round(sum(r[3] > 0 for r in tail) / len(tail), 4) if tail else 0.0,
        "retry_rate_outside_tail": round(sum(r[3] > 0 for r in rest) / len(rest), 4) if rest else 0.0,
        "latency_correlation": round(spearman([b[1] for b in buckets], [b[2] for b in buckets]), 3),
        "buckets": len(buckets),
        "wasted_ms_p50_in_retried": round(float(np.median(wasted)) / MS, 3) if wasted else 0.0,
        "exemplar_trace_ids": [r[0] for r in retried[:3]],
    }


RULE = Rule(
    id=ID, title=TITLE, category="reliability",
    thresholds={
        "min_retry_ratio": Threshold(0.05, "fraction", "retries per logical call below which nothing fires"),
        "min_bucket_requests": Threshold(5, "requests", "requests a time bucket needs for its retry rate and p95 to "
                                         "count (fewer: a p95 is the single slowest request)"),
        "amplification": Threshold(1.2, "attempts/call", "load amplification that counts as a spiral"),
        "min_correlation": Threshold(0.5, "Spearman rho", "correlation of retry rate with p95 over time"),
        "tail_enrichment": Threshold(2.0, "ratio", "retry rate in the p95 tail over the rest"),
    },
    causes=(
           ('queueing-growth', 'retries add load, and the added load is what queues'),),
    requires=(Need(client_spans=True),),
    doc=__doc__, detect=detect)
