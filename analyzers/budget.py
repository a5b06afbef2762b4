"""The latency budget per route: each stage's measured p95 against its budget from triage.toml, with headroom."""
from __future__ import annotations

from .latency import route_latency, stage_breakdown
from .stages import STAGES


def budget_table(store, constraints) -> dict[str, dict]:
    """route -> {stage or 'total': {budget_ms, p95_ms, headroom_ms, over}}; empty without a [budget]."""
    b = constraints.budget
    if not any(f"{s}_ms" in b for s in STAGES) and "total_ms" not in b:
        return {}
    lat = route_latency(store)
    out: dict[str, dict] = {}
    for route, stages in stage_breakdown(store).items():
        rows = {}
        for stage in STAGES:
            if f"{stage}_ms" in b:
                p95 = stages.get(stage, {}).get("p95_ms", 0.0)
                rows[stage] = _row(b[f"{stage}_ms"], p95)
        if "total_ms" in b and route in lat:
            rows["total"] = _row(b["total_ms"], lat[route]["p95_ms"])
        out[route] = rows
    return out


def _row(budget: float, p95: float) -> dict:
    return {"budget_ms": budget, "p95_ms": round(p95, 3), "headroom_ms": round(budget - p95, 3), "over": p95 > budget}
