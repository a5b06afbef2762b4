"""slo-burn: the error budget is burning faster than the SLO allows, in both a long and a short window.

What: up to four SLIs from triage.toml ``[slo]``: availability (errors against ``error_rate``), latency
(requests slower than ``p95_ms``), and, for LLM routes, time to first token (requests whose TTFT is above
``ttft_p95_ms``) and inter-token latency (requests whose mean ITL, decode time over output tokens - 1, is above
``itl_p95_ms``), each latency SLI allowed for 5% of requests. TTFT and ITL come from the LLM engine's spans
(``gen_ai.latency.*``, the first engine span of each request). Burn rate = bad fraction / allowed
fraction, over the whole capture (long window) and its last twelfth (short window, as 1h/5m in SRE
practice). Both at or above the fast-burn rate (14.4) is critical; both at or above the slow-burn rate
(6) is a warning.
Why: a burn rate of 14.4 spends a 30-day budget in about two days; requiring both windows keeps a short
spike from paging and a finished incident from lingering.
Fix: stop the burn first (shed or degrade load, roll back), then fix the cause the other findings name.
"""
from __future__ import annotations

import numpy as np

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..rule import Context, Need, Rule, Threshold

ID = "slo-burn"
TITLE = "SLO error budget burning"


_SLO_KEY = {"latency": "p95_ms", "ttft": "ttft_p95_ms", "itl": "itl_p95_ms"}


def _token_slis(store, slo: dict) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """For each of ``[slo] ttft_p95_ms`` / ``itl_p95_ms`` set: (sli, [(route, request start ns, bad)]) over the
    requests whose engine span has the figure."""
    if not (slo.get("ttft_p95_ms") or slo.get("itl_p95_ms")):
        return []
    reqs = sig.engine_requests(store)
    out = []
    if slo.get("ttft_p95_ms"):
        limit = float(slo["ttft_p95_ms"]) / 1e3
        out.append(("ttft", [(r["route"], r["request_start_ns"], int(r["ttft"] > limit))
                             for r in reqs if r["ttft"] is not None]))
    if slo.get("itl_p95_ms"):
        limit = float(slo["itl_p95_ms"]) / 1e3
        out.append(("itl", [(r["route"], r["request_start_ns"], int(r["decode"] / (r["output_tokens"] - 1) > limit))
                            for r in reqs if r["decode"] is not None and r["output_tokens"] is not None
                            and r["output_tokens"] >= 2]))
    return out


def detect(ctx: Context, th: dict) -> list[Finding]:
    slo = ctx.constraints.slo
    if not any(slo.get(k) for k in ("error_rate", "p95_ms", "ttft_p95_ms", "itl_p95_ms")):
        return [not_evaluated(ID, TITLE, "no [slo] error_rate, p95_ms, ttft_p95_ms or itl_p95_ms in triage.toml")]
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
    token_slis = _token_slis(store, slo)
    for route, in store.query("SELECT DISTINCT route FROM requests"):
        rows = []
        for sli, bad_sql, allowed in slis:
            rows.append((sli, allowed, *store.query(f"""
                SELECT avg(({bad_sql})::INT), count(*),
                       avg(({bad_sql})::INT) FILTER (WHERE start_ns >= ?), count(*) FILTER (WHERE start_ns >= ?)
                FROM requests WHERE route = ?""", [short_from, short_from, route])[0]))
        for sli, bad in token_slis:
            long_ = [b for r, t, b in bad if r == route]
            short = [b for r, t, b in bad if r == route and t >= short_from]
            rows.append((sli, 0.05, float(np.mean(long_)) if long_ else None, len(long_),
                         float(np.mean(short)) if short else None, len(short)))
        for sli, allowed, long_bad, long_n, short_bad, short_n in rows:
            if long_n < th["min_requests"] or not short_n:
                continue
            burn_long, burn_short = long_bad / allowed, (short_bad or 0) / allowed
            if min(burn_long, burn_short) < th["slow_burn"]:
                continue
            severity = "critical" if min(burn_long, burn_short) >= th["fast_burn"] else "warning"
            target = f"error rate {allowed:.2%}" if sli == "availability" else \
                f"95% under {slo[_SLO_KEY[sli]]:.0f} ms"
            out.append(Finding(
                rule=ID, severity=severity, title=TITLE,
                summary=(f"{route}: {sli} SLO ({target}) burning at {burn_long:.1f}x over the capture and "
                         f"{burn_short:.1f}x in its last twelfth ({long_bad:.1%} bad)."),
                scope={"route": route, "sli": sli},
                evidence={"burn_rate_long": round(burn_long, 2), "burn_rate_short": round(burn_short, 2),
                          "bad_fraction_long": round(long_bad, 4), "bad_fraction_short": round(short_bad or 0, 4),
                          "allowed_fraction": allowed, "requests_long": long_n, "requests_short": short_n,
                          "fast_burn": th["fast_burn"], "slow_burn": th["slow_burn"],
                          **({"saving_basis": "ttft"} if sli == "ttft" else {})},
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
    requires=tuple(Need(requests=True, constraints=(f"slo.{k}",)) for k in ("error_rate", "p95_ms", "ttft_p95_ms",
                                                                               "itl_p95_ms")),
    doc=__doc__, detect=detect)
