"""budget-overrun: a stage (or the whole request) exceeds its latency budget from triage.toml.

What: per route, each stage's p95 (exclusive time) against ``[budget] <stage>_ms``, and the end-to-end p95
against ``total_ms``.
Why: the budget is the agreement that lets each stage's owner work independently; a stage over its share
eats the headroom of every other one, and the end-to-end SLO goes with it.
Fix: the stage's owner brings its p95 back inside the budget, or the split is changed deliberately.
"""
from __future__ import annotations

from ..budget import budget_table
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import tail_exemplars
from ..rule import Context, Need, Rule, Threshold

ID = "budget-overrun"
TITLE = "Stage over its latency budget"


def detect(ctx: Context, th: dict) -> list[Finding]:
    table = budget_table(ctx.store, ctx.constraints)
    if not table:
        return [not_evaluated(ID, TITLE, "no [budget] in triage.toml")]
    out = []
    for route, rows in table.items():
        for stage, r in rows.items():
            if not r["over"] or r["p95_ms"] < r["budget_ms"] * (1 + th["tolerance"]):
                continue
            over = r["p95_ms"] / r["budget_ms"] if r["budget_ms"] else float("inf")
            out.append(Finding(
                rule=ID, severity="critical" if stage == "total" or over >= th["critical_over"] else "warning",
                title=TITLE,
                summary=(f"{route}: {stage} p95 {r['p95_ms']:.1f} ms is over its {r['budget_ms']:.0f} ms budget "
                         f"by {-r['headroom_ms']:.1f} ms ({over:.1f}x)."),
                scope={"route": route, "stage": stage},
                evidence={**r, "ratio": round(over, 3), "budget_owner": ctx.constraints.budget.get("owner"),
                          "exemplar_trace_ids": tail_exemplars(ctx.store, stage, route) if stage != "total" else []},
                confidence=0.9,
                remediations=scored(["right-size-stage"] + (["quantize-int8"] if stage in ("inference", "total") else []),
                                    ctx.constraints.scorecard),
                impact_ms=-r["headroom_ms"]))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="constraints",
    thresholds={
        "tolerance": Threshold(0.0, "fraction", "how far over the budget before it fires"),
        "critical_over": Threshold(2.0, "ratio", "p95 over budget at which a stage overrun is critical"),
    },
    severity_from="rule",  # a breached constraint, not a latency saving
    requires=(Need(requests=True, constraints=("budget",)),),
    doc=__doc__, detect=detect)
