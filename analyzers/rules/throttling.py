"""throttling: the accelerator slows itself down, or latency drifts up while the load stays the same.

What: DCGM clock event reasons (``DCGM_FI_DEV_CLOCKS_EVENT_REASONS``, formerly ``..._CLOCK_THROTTLE_REASONS``)
reporting thermal, power or hardware slowdown in a share of samples; or, from traces, a steady request
rate (no over-dispersion) while median latency rises steadily through the window without queueing to
explain it.
Why: a throttled GPU runs every kernel slower; the service degrades with no change in traffic or code,
and capacity plans based on benchmark speed stop holding.
Fix: fix cooling or power limits, move load off the affected devices, re-baseline capacity.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import CLOCK_REASONS

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import bucket_seconds, route_queue_sql
from ..metrics import series
from ..rule import Context, Need, Rule, Threshold
from ..stats import dispersion, spearman, thirds_ratio

ID = "throttling"
TITLE = "Throttling: the device slows down"
# clock event reason bits that mean "slowed down against our will" (not idle or app clock settings)
SLOWDOWN_BITS = {0x4: "SW power cap", 0x8: "HW slowdown", 0x20: "SW thermal", 0x40: "HW thermal",
                 0x80: "HW power brake", 0x10: "sync boost"}


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    out = []
    clocks = series(store, CLOCK_REASONS)
    for s in clocks:
        mask = sum(SLOWDOWN_BITS)
        vals = s.values[np.isfinite(s.values)].astype(np.int64)
        hit = (vals & mask) != 0
        if len(vals) and hit.mean() >= th["throttled_fraction"]:
            reasons = sorted({name for bit, name in SLOWDOWN_BITS.items() if (vals & bit).any()})
            out.append(Finding(
                rule=ID, severity="critical" if hit.mean() >= th["critical_fraction"] else "warning", title=TITLE,
                summary=f"{s.key}: clocks held down in {hit.mean():.0%} of samples ({', '.join(reasons)}).",
                scope={"device": s.key},
                evidence={"throttled_fraction": round(float(hit.mean()), 4), "reasons": reasons, "samples": int(len(vals))},
                confidence=0.9, remediations=scored(["fix-cooling-power"], ctx.constraints.scorecard), impact_ms=0.0))
    step = bucket_seconds(store, 30)
    for route, in store.query("SELECT DISTINCT route FROM requests"):
        rows = store.query(f"""{route_queue_sql(step)}
            SELECT b, count(*), median(duration_ns / 1e6), avg(queue_ns / 1e6), avg(duration_ns / 1e6) FROM rq GROUP BY b HAVING count(*) >= {int(th["min_bucket_requests"])} ORDER BY b""",
                           [route])
        if len(rows) < th["min_buckets"]:
            continue
        b = np.array([r[0] for r in rows], dtype=float)
        n = np.array([r[1] for r in rows], dtype=float)
        p50 = np.array([r[2] for r in rows])
        queue_share = float(np.sum([r[3] for r in rows]) / max(np.sum([r[4] for r in rows]), 1e-9))
        rho = spearman(b, p50)
        growth, first, last = thirds_ratio(b, p50)
        if (dispersion(n) < th["max_dispersion"] and rho >= th["min_correlation"] and growth >= th["min_drift"]
                and queue_share < th["max_queue_share"]):
            out.append(Finding(
                rule=ID, severity="warning", title="Latency drifts up at constant load",
                summary=(f"{route}: median latency rises {first:.1f} → {last:.1f} ms over the window (Spearman "
                         f"{rho:.2f}) while the request rate holds steady and queueing stays at {queue_share:.0%}."),
                scope={"route": route},
                evidence={"p50_first_third_ms": round(first, 3), "p50_last_third_ms": round(last, 3),
                          "time_correlation": round(rho, 3), "rate_dispersion": round(dispersion(n), 2),
                          "queue_fraction": round(queue_share, 3), "buckets": len(rows), "bucket_s": step},
                confidence=0.6, remediations=scored(["fix-cooling-power"], ctx.constraints.scorecard),
                impact_ms=last - first))
    if not out and not clocks and store.scalar("SELECT count(*) FROM requests") == 0:
        return [not_evaluated(ID, TITLE, "no DCGM clock event metrics and no requests to watch for drift")]
    return out


RULE = Rule(
    id=ID, title=TITLE, category="accelerator",
    thresholds={
        "throttled_fraction": Threshold(0.10, "fraction", "share of samples with slowdown clock reasons"),
        "critical_fraction": Threshold(0.5, "fraction", "throttled most of the time: the device's capacity itself is "
                                       "lower, not an occasional blip"),
        "min_buckets": Threshold(8, "buckets", "time buckets needed to judge drift"),
        "min_bucket_requests": Threshold(5, "requests", "requests a time bucket needs for its median to count "
                                         "(fewer: one slow request moves it)"),
        "max_dispersion": Threshold(3.0, "variance/mean", "request counts per bucket must be steady"),
        "min_correlation": Threshold(0.8, "Spearman rho", "median latency against time"),
        "min_drift": Threshold(1.5, "ratio", "median latency, last third over first third"),
        "max_queue_share": Threshold(0.3, "fraction", "queueing above this explains the drift instead"),
    },
    causes=(
           ('budget-overrun', 'a throttled device overruns the inference budget'),),
    severity_from="rule",  # a breached constraint, not a latency saving
    requires=(Need(metrics=CLOCK_REASONS, what="DCGM clock event metrics"), Need(requests=True)),
    metrics=CLOCK_REASONS,
    doc=__doc__, detect=detect)
