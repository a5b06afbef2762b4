"""Before/after comparison: p50/p95/p99 per route with bootstrap confidence intervals of the change,
a verdict (improved / regressed / no significant change), and the SLO checked before and after.
The re-measure step of remediations uses this same code."""
from __future__ import annotations

import numpy as np

from .constraints import Constraints
from .markdown import md

QUANTILES = {"p50": 50, "p95": 95, "p99": 99}


def durations_ms(store) -> dict[str, np.ndarray]:
    rows = store.query("SELECT route, list(duration_ns) FROM requests GROUP BY route")
    return {r: np.asarray(d, dtype=float) / 1e6 for r, d in rows}


def bootstrap_diff(before: np.ndarray, after: np.ndarray, q: float, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(observed after-before, CI low, CI high) of the q-th percentile, by percentile bootstrap."""
    rng = np.random.default_rng(seed)
    obs = float(np.percentile(after, q) - np.percentile(before, q))
    diffs = np.empty(n_boot)
    chunk = max(1, int(4e6 // max(len(before), len(after), 1)))  # bound memory: resample in chunks
    for i in range(0, n_boot, chunk):
        k = min(chunk, n_boot - i)
        b = before[rng.integers(0, len(before), (k, len(before)))]
        a = after[rng.integers(0, len(after), (k, len(after)))]
        diffs[i:i + k] = np.percentile(a, q, axis=1) - np.percentile(b, q, axis=1)
    lo, hi = np.percentile(diffs, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return obs, float(lo), float(hi)


def compare(before: dict[str, np.ndarray], after: dict[str, np.ndarray], constraints: Constraints,
            n_boot: int = 1000, level: float = 0.95) -> dict:
    slo_p95 = constraints.slo.get("p95_ms")
    slo_p99 = constraints.slo.get("p99_ms")
    routes = {}
    for route in sorted(set(before) & set(after)):
        b, a = before[route], after[route]
        entry = {"before": {"requests": int(len(b))}, "after": {"requests": int(len(a))}, "change": {}}
        for name, q in QUANTILES.items():
            before_q = float(np.percentile(b, q))
            entry["before"][f"{name}_ms"] = round(before_q, 3)
            entry["after"][f"{name}_ms"] = round(float(np.percentile(a, q)), 3)
            obs, lo, hi = bootstrap_diff(b, a, q, n_boot=n_boot, level=level)
            base = before_q or 1e-9
            entry["change"][name] = {"ms": round(obs, 3), "pct": round(100 * obs / base, 2),
                                     "ci_ms": [round(lo, 3), round(hi, 3)], "ci_level": level}
        p95 = entry["change"]["p95"]
        if p95["ci_ms"][1] < 0:
            verdict = "improved"
        elif p95["ci_ms"][0] > 0:
            verdict = "regressed"
        else:
            verdict = "no significant change"
        entry["verdict"] = verdict
        entry["verdict_basis"] = (f"p95 {p95['pct']:+.1f}% ({p95['ms']:+.2f} ms), {level:.0%} bootstrap CI "
                                  f"[{p95['ci_ms'][0]:+.2f}, {p95['ci_ms'][1]:+.2f}] ms")
        if slo_p95 or slo_p99:
            entry["slo"] = {"p95_ms": slo_p95, "p99_ms": slo_p99,
                            "met_before": _meets(entry["before"], slo_p95, slo_p99),
                            "met_after": _meets(entry["after"], slo_p95, slo_p99)}
        routes[route] = entry
    return {"version": 1, "routes": routes,
            "only_before": sorted(set(before) - set(after)), "only_after": sorted(set(after) - set(before))}


def _meets(stats: dict, p95: float | None, p99: float | None) -> bool:
    return (p95 is None or stats["p95_ms"] <= p95) and (p99 is None or stats["p99_ms"] <= p99)


def to_markdown(result: dict) -> str:
    lines = ["## triage compare", "", "| route | p50 ms | p95 ms | p99 ms | p95 change (95% CI) | verdict | SLO |",
             "|---|---|---|---|---|---|---|"]
    for route, e in result["routes"].items():
        b, a, c = e["before"], e["after"], e["change"]["p95"]
        slo = ""
        if "slo" in e:
            slo = f"{'met' if e['slo']['met_before'] else 'missed'} → {'met' if e['slo']['met_after'] else 'missed'}"
        lines.append(f"| {md(route)} | {b['p50_ms']:.1f} → {a['p50_ms']:.1f} | {b['p95_ms']:.1f} → {a['p95_ms']:.1f} | "
                     f"{b['p99_ms']:.1f} → {a['p99_ms']:.1f} | {c['pct']:+.1f}% [{c['ci_ms'][0]:+.1f}, {c['ci_ms'][1]:+.1f}] ms"
                     f" | **{e['verdict']}** | {slo} |")
    for key, label in (("only_before", "only before"), ("only_after", "only after")):
        if result[key]:
            lines.append(f"\nRoutes {label}: {', '.join(md(r) for r in result[key])}")
    return "\n".join(lines) + "\n"
