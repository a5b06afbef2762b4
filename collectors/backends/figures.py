"""What a report says about figures that came from a trace backend: which are exact and which sampled.

``annotate`` puts the backend's exact per-route headline (count, p50/p95/p99, error rate aggregated by the
backend over every root span of the window) in place of the figures computed from the sampled traces, marks
each latency entry ``"basis": "exact"`` (or ``"sampled"`` where the backend could not aggregate), and adds
``"sources"``: per backend, the window, the sampling rate and method, and the rows transferred. File inputs
get none of these fields.
"""
from __future__ import annotations


def annotate(rep: dict, metas: list[dict]) -> dict:
    exact: dict[str, dict] = {}
    for m in metas:
        for route, d in (m.get("latency") or {}).get("routes", {}).items():
            exact.setdefault(route, d)
    if exact:
        sampled = rep["latency"]
        merged = {}
        for route, d in exact.items():  # the backend's order: most requests first, then the route
            merged[route] = {**sampled.get(route, {}), **d, "basis": "exact"}
        for route, d in sampled.items():
            if route not in merged:
                merged[route] = {**d, "basis": "sampled"}
        rep["latency"] = merged
    else:
        rep["latency"] = {r: {**d, "basis": metas[0]["detail"]["basis"]} for r, d in rep["latency"].items()}
    rates = [m["detail"]["rate"] for m in metas]  # None: the backend returned traces without saying of how many
    detail = "exact" if all(m["detail"]["basis"] == "exact" for m in metas) else "sampled"
    rep["sources"] = [{k: v for k, v in m.items() if k != "latency"} | {
        "latency": {k: v for k, v in (m.get("latency") or {"basis": m["detail"]["basis"]}).items() if k != "routes"}}
        for m in metas]
    rep["figures"] = {"latency": "exact" if exact else detail, "stages": detail, "findings": detail,
                      "sample_rate": None if None in rates else min(rates)}
    return rep


def describe(rep: dict) -> tuple[str, str, str]:
    """(sources, latency basis, stages/findings basis) of a backend's report, in words for the user."""
    f = rep["figures"]
    srcs = ", ".join(s["source"] for s in rep.get("sources", []))
    if f["stages"] == "exact":
        detail = "on every trace of the window"
    elif f["sample_rate"] is None:
        detail = "on the traces the backend returned (it does not say of how many)"
    else:
        detail = f"on {f['sample_rate']:.2%} of the traces (whole traces, sampled by trace id)"
    latency = "exact (aggregated by the backend over every request)" if f["latency"] == "exact" else f["latency"]
    return srcs, latency, detail
