"""cost-per-inference: what one thousand calls cost on the accelerators, against the cap in triage.toml.

What: accelerators x price per hour / (measured throughput x 3600) x 1000, from ``[cost]``
(``accelerator_price_per_hour``, ``accelerators``, ``cap_per_1000_calls``) and the request rate in the
capture; with the mean GPU utilization as evidence of what is paid for idle.
Why: "optimized" means the SLO is met at target cost; an idle, over-provisioned fleet meets latency by
burning money, and that is a finding too.
Fix: consolidate (batching, co-location, fewer devices), scale on queue depth, or right-size the device.
"""
from __future__ import annotations

import numpy as np

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..metrics import GPU_UTIL, gpu_utilization
from ..rule import Context, Need, Rule, Threshold

ID = "cost-per-inference"
TITLE = "Cost per inference over the cap"


def detect(ctx: Context, th: dict) -> list[Finding]:
    cost = ctx.constraints.cost
    if not cost.get("accelerator_price_per_hour") or not cost.get("cap_per_1000_calls"):
        return [not_evaluated(ID, TITLE, "no [cost] accelerator_price_per_hour and cap_per_1000_calls in triage.toml")]
    t0, t1, n = ctx.store.query("SELECT min(start_ns), max(end_ns), count(*) FROM requests")[0]
    if not n or t1 <= t0:
        return [not_evaluated(ID, TITLE, "no requests to measure throughput")]
    rps = n / ((t1 - t0) / 1e9)
    devices = float(cost.get("accelerators", 1))
    per_1000 = devices * float(cost["accelerator_price_per_hour"]) / (rps * 3600) * 1000
    cap = float(cost["cap_per_1000_calls"])
    if per_1000 <= cap * (1 + th["tolerance"]):
        return []
    utils = [float(np.nanmean(s.values * scale)) for s, scale in gpu_utilization(ctx.store) if len(s.values)]
    util = float(np.mean(utils)) if utils else None
    cur = cost.get("currency", "")
    return [Finding(
        rule=ID, severity="critical" if per_1000 >= th["critical_over_cap"] * cap else "warning", title=TITLE,
        summary=(f"{per_1000:.3f} {cur} per 1,000 calls at {rps:.1f} req/s on {devices:g} accelerator(s), over the "
                 f"{cap:.3f} {cur} cap" + (f"; the GPUs are {util:.0%} busy" if util is not None else "") + "."),
        evidence={"cost_per_1000": round(per_1000, 4), "cap_per_1000": cap, "throughput_rps": round(rps, 3),
                  "accelerators": devices, "price_per_hour": cost["accelerator_price_per_hour"],
                  "mean_gpu_utilization": None if util is None else round(util, 4),
                  "break_even_rps": round(devices * float(cost["accelerator_price_per_hour"]) / 3.6 / cap, 3)},
        confidence=0.8, remediations=scored(["consolidate-replicas", "enable-dynamic-batching", "autoscale"],
                                            ctx.constraints.scorecard),
        impact_ms=0.0)]


RULE = Rule(
    id=ID, title=TITLE, category="cost",
    thresholds={"tolerance": Threshold(0.0, "fraction", "how far over the cap before it fires"),
                "critical_over_cap": Threshold(2.0, "ratio", "cost over the cap at which it is critical: at twice the "
                                               "cap, half the accelerator spend buys nothing the cap allows")},
    severity_from="rule",  # a breached constraint, not a latency saving
    requires=(Need(requests=True, constraints=("cost.accelerator_price_per_hour", "cost.cap_per_1000_calls")),),
    metrics=tuple(GPU_UTIL),
    doc=__doc__, detect=detect)
