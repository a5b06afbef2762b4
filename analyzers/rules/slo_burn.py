"""slo-burn: the error budget is burning faster than the SLO allows, in both a long and a short window.

What: two SLIs from triage.toml ``[slo]``: availability (errors against ``error_rate``) and latency
(requests slower than ``p95_ms``, allowed for 5% of requests). Burn rate = bad fraction / allowed
fraction, over the whole capture (long window) and its last twelfth (short window, as 1h/5m in SRE
practice). Both at or above the fast-burn rate (14.4) is critical; both at or above the slow-burn rate
(6) is a warning.
Why: a burn rate of 14.4 spends a 30-day budget in about two days; requiring both windows keeps a short
spike from paging and a finished incident from lingering.
Fix: stop the burn first (shed or degrade load, roll back), then fix the cause the other findings name.
"""
from __future__ import annotations

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..rule import Context, Need, Rule, Threshold

ID = "slo-burn"
TITLE = "SLO error budget burning"


def detect(ctx: Context, th: dict) -> list[Finding]:
    slo = ctx.constraints.slo
    if not slo.get("error_rate") and not slo.get("p95_ms"):
        return [not_evaluated(ID, TITLE, "no [slo] error_rate or p95_ms in triage.toml")]
    store = ctx.store
    t = store.query("SELECT min(start_ns), max(start_ns) FROM requests")[0]
    if t[0] is None:
        return [not_evaluated(ID, TITLE, "no requests in the traces")]
    short_from = t[1] - (t[1] - t[0]) // 12
    out = []
    slis = []
    if slo.get("error_rate"):
        slis.append(("availability", "error", float(slo["error_rate"])))
    if slo.get("p95_ms"):
        slis.append(("latency", f"duration_ns > {int(float(slo['p95_ms']) * 1e6)}", 0.05))
    for route, in store.query("SELECT DISTINCT route FROM requests"):
        for sli, bad_sql, allowed in slis:
            long_bad, long_n, short_bad, short_n = store.query(f"""
                SELECT avg(({bad_sql})::INT), count(*),
                       avg(({bad_sql})::INT) FILTER (WHERE start_ns >= ?), count(*) FILTER (WHERE start_ns >= ?)
                FROM requests WHERE route = ?""", [short_from, short_from, route])[0]
            if long_n < th["min_requests"] or not short_n:
                continue
            burn_long, burn_short = long_bad / allowed, (short_bad or 0) / allowed
            if min(burn_long, burn_short) < th["slow_burn"]:
                continue
            severity = "critical" if min(burn_long, burn_short) >= th["fast_burn"] else "warning"
            target = f"error rate {allowed:.2%}" if sli == "availability" else f"95% under {slo['p95_ms']:.0f} ms"
            out.append(Finding(
                rule=ID, severity=severity, title=TITLE,
                summary=(f"{route}: {sli} SLO ({target}) burning at {burn_long:.1f}x over the capture and "
                         f"{burn_short:.1f}x in its last twelfth ({long_bad:.1%} bad)."),
                scope={"route": route, "sli": sli},
                evidence={"burn_rate_long": round(burn_long, 2), "burn_rate_short": round(burn_short, 2),
                          "bad_fraction_long": round(long_bad, 4), "bad_fraction_short": round(short_bad or 0, 4),
                          "allowed_fraction": allowed, "requests_long": long_n, "requests_short": short_n,
                          "fast_burn": th["fast_burn"], "slow_burn": th["slow_burn"]},
                confidence=min(1.0, long_n / 500 + 0.5),
                remediations=scored(["shed-load-on-burn", "admission-control"], ctx.constraints.scorecard),
                impact_ms=0.0))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="slo",
    thresholds={
        "fast_burn": Threshold(14.4, "x budget", "burn rate in both windows that is critical"),
        "slow_burn": Threshold(6.0, "x budget", "burn rate in both windows that is a warning"),
        "min_requests": Threshold(50, "requests", "requests needed in the long window"),
    },
    severity_from="rule",  # a breached constraint, not a latency saving
    requires=(Need(requests=True, constraints=("slo.error_rate",)), Need(requests=True, constraints=("slo.p95_ms",))),
    doc=__doc__, detect=detect)
