"""Before/after comparison: p50/p95/p99 per route with bootstrap confidence intervals of the change,
a verdict (improved / regressed / no significant change), and the SLO checked before and after.
The re-measure step of remediations uses this same code.

``explain`` adds what a latency change is made of (``compare_analyses`` returns both):
- per route and stage, the p50/p95 of each request's time in the stage, before and after, with the same
  bootstrap CI of the change and a verdict: which stage regressed, which improved;
- the findings (warning and above) that appeared, went away or changed severity, by rule id;
- a mix-shift check: the after-requests re-weighted to the before mix of strata (model × input size in
  powers of two) give the p95 the after-service would have had on the before traffic; the p95 change splits
  into per-request speed (that p95 − before) and mix (after − that p95)."""
from __future__ import annotations

import numpy as np

from .constraints import Constraints
from .stages import STAGES
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


def _resampled_percentiles(x: np.ndarray, q: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The q-th percentile (numpy's linear method) of ``n_boot`` bootstrap resamples of ``x``, in O(n log n +
    n_boot) instead of O(n_boot * n): a resample's k-th smallest value is x_sorted[floor(n * U)], U the k-th
    smallest of n uniforms, U ~ Beta(k, n - k + 1); the next one is U + (1 - U) * Beta(1, n - k - 1)."""
    xs = np.sort(x)
    n = len(xs)
    if n == 1:
        return np.full(n_boot, xs[0])
    h = (n - 1) * q / 100
    k = min(int(np.floor(h)), n - 2)
    frac = h - k
    u = rng.beta(k + 1, n - k, n_boot)
    u_next = u + (1 - u) * rng.beta(1, max(n - k - 1, 1), n_boot)
    lo = xs[np.minimum((u * n).astype(np.int64), n - 1)]
    hi = xs[np.minimum((u_next * n).astype(np.int64), n - 1)]
    return lo + frac * (hi - lo)


def bootstrap_diff_fast(before: np.ndarray, after: np.ndarray, q: float, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """``bootstrap_diff`` by order statistics: the same percentile bootstrap, without materialising resamples
    (a capture's every stage, on 100k requests, in milliseconds)."""
    rng = np.random.default_rng(seed)
    obs = float(np.percentile(after, q) - np.percentile(before, q))
    diffs = _resampled_percentiles(after, q, n_boot, rng) - _resampled_percentiles(before, q, n_boot, rng)
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
    lines += _explain_markdown(result)
    return "\n".join(lines) + "\n"


# ---- what the change is made of: stages, findings, mix ---------------------------------------------------

STAGE_QUANTILES = {"p50": 50, "p95": 95}
MATERIAL = ("critical", "warning")


def stage_times_ms(store) -> dict[str, dict[str, np.ndarray]]:
    """{route: {stage: per-request time in the stage, ms}}; a request with no time in a stage counts 0 there."""
    out: dict[str, dict[str, np.ndarray]] = {}
    rows = store.query("""
        WITH r AS (SELECT trace_id, root_id, route FROM requests),
             st AS (SELECT DISTINCT route, stage FROM request_stages)
        SELECT st.route, st.stage, list(coalesce(rs.ns, 0) ORDER BY r.trace_id, r.root_id)
        FROM r JOIN st ON st.route = r.route
        LEFT JOIN request_stages rs ON rs.trace_id = r.trace_id AND rs.root_id = r.root_id AND rs.stage = st.stage
        GROUP BY ALL""")
    for route, stage, ns in rows:
        out.setdefault(route, {})[stage] = np.asarray(ns, dtype=float) / 1e6
    return out


def _verdict(ci: list[float]) -> str:
    return "improved" if ci[1] < 0 else "regressed" if ci[0] > 0 else "no significant change"


def compare_stages(before: dict, after: dict, n_boot: int = 1000, level: float = 0.95) -> dict:
    """Per route, per stage: p50/p95 before/after, the change with its bootstrap CI, a verdict; and the stages
    that regressed / improved at p95, largest change first."""
    out = {}
    for route in sorted(set(before) & set(after)):
        stages = {}
        present = set(before[route]) | set(after[route])
        order = {st: i for i, st in enumerate(STAGES)}
        for stage in sorted(present, key=lambda st: (order.get(st, len(order)), st)):
            b = before[route].get(stage)
            a = after[route].get(stage)
            n_b = len(next(iter(before[route].values())))
            n_a = len(next(iter(after[route].values())))
            b = b if b is not None else np.zeros(n_b)
            a = a if a is not None else np.zeros(n_a)
            e = {"before": {}, "after": {}, "change": {}}
            for name, q in STAGE_QUANTILES.items():
                e["before"][f"{name}_ms"] = round(float(np.percentile(b, q)), 3)
                e["after"][f"{name}_ms"] = round(float(np.percentile(a, q)), 3)
                obs, lo, hi = bootstrap_diff_fast(b, a, q, n_boot=n_boot, level=level)
                e["change"][name] = {"ms": round(obs, 3), "ci_ms": [round(lo, 3), round(hi, 3)], "ci_level": level}
            e["verdict"] = _verdict(e["change"]["p95"]["ci_ms"])
            stages[stage] = e
        by_change = sorted(stages, key=lambda st: -abs(stages[st]["change"]["p95"]["ms"]))
        out[route] = {"stages": stages,
                      "regressed": [st for st in by_change if stages[st]["verdict"] == "regressed"],
                      "improved": [st for st in by_change if stages[st]["verdict"] == "improved"]}
    return out


def compare_findings(before: list, after: list) -> dict:
    """Findings at warning and above, by rule id: appeared, went away, severity changed, still there."""
    def material(fs):
        out = {}
        for f in fs:
            d = f if isinstance(f, dict) else f.to_dict()
            if d["severity"] in MATERIAL and d["rule"] not in out:  # the rule's first (worst) finding
                out[d["rule"]] = {"rule": d["rule"], "severity": d["severity"], "summary": d["summary"]}
        return out

    b, a = material(before), material(after)
    return {"appeared": [a[r] for r in a if r not in b],
            "went_away": [b[r] for r in b if r not in a],
            "severity_changed": [{"rule": r, "before": b[r]["severity"], "after": a[r]["severity"]}
                                 for r in a if r in b and a[r]["severity"] != b[r]["severity"]],
            "unchanged": [{"rule": r, "severity": a[r]["severity"]}
                          for r in a if r in b and a[r]["severity"] == b[r]["severity"]]}


def weighted_percentile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """The inverse of the weighted empirical CDF: the smallest x whose cumulative weight share reaches q%."""
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[order])
    i = int(np.searchsorted(cum, q / 100 * cum[-1], side="left"))
    return float(x[order][min(i, len(x) - 1)])


def strata_of(store) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{route: (duration ms, stratum)}; stratum = model and input size rounded down to a power of two
    ('?' where a request has no input size)."""
    rows = store.query("""
        SELECT route, list(duration_ns ORDER BY trace_id, root_id),
               list(coalesce(model, '') || '|' || coalesce(
                   CAST(CAST(pow(2, floor(log2(greatest(input_size, 1)))) AS BIGINT) AS VARCHAR), '?')
                    ORDER BY trace_id, root_id)
        FROM requests GROUP BY route""")
    return {r: (np.asarray(d, dtype=float) / 1e6, np.asarray(s, dtype=object)) for r, d, s in rows}


def mix_weights(before_codes: np.ndarray, after_codes: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Weights that give the after-requests the before mix of strata (integer codes < k):
    w = P_before(s) / P_after(s); and the share of before-requests in strata the after capture does not have
    (they cannot be re-weighted)."""
    pb = np.bincount(before_codes, minlength=k) / len(before_codes)
    pa = np.bincount(after_codes, minlength=k) / len(after_codes)
    ratio = np.divide(pb, pa, out=np.zeros(k), where=pa > 0)
    return ratio[after_codes], float(pb[pa == 0].sum())


def _mix_split(b, a, bc, ac, k, q=95):
    w, unmatched = mix_weights(bc, ac, k)
    if not w.sum():
        return None, unmatched
    return (float(np.percentile(b, q)), float(np.percentile(a, q)), weighted_percentile(a, w, q)), unmatched


def compare_mix(before: dict, after: dict, n_boot: int = 300, level: float = 0.95, seed: int = 0) -> dict:
    """Per route: the p95 change split into mix (after p95 − after re-weighted to the before mix) and
    per-request speed (re-weighted after p95 − before p95), each with a bootstrap CI."""
    out = {}
    rng = np.random.default_rng(seed)
    for route in sorted(set(before) & set(after)):
        (b, bs), (a, as_) = before[route], after[route]
        strata, codes = np.unique(np.concatenate([bs, as_]).astype(str), return_inverse=True)
        bc, ac, k = codes[:len(bs)], codes[len(bs):], len(strata)
        split, unmatched = _mix_split(b, a, bc, ac, k)
        strata = [str(x) for x in strata]
        nb, na = np.bincount(bc, minlength=k) / len(bc), np.bincount(ac, minlength=k) / len(ac)
        entry = {"strata": k, "unmatched_before_share": round(unmatched, 4),
                 "by_stratum": {s: {"before_share": round(float(nb[i]), 4), "after_share": round(float(na[i]), 4)}
                                for i, s in enumerate(strata)}}
        if split is None:
            entry["note"] = "no stratum of the before traffic is in the after capture: mix and speed cannot be split"
            out[route] = entry
            continue
        p_b, p_a, p_rw = split
        boots = []
        for _ in range(n_boot):
            ib, ia = rng.integers(0, len(b), len(b)), rng.integers(0, len(a), len(a))
            s2, _ = _mix_split(b[ib], a[ia], bc[ib], ac[ia], k)
            if s2 is not None:
                boots.append((s2[2] - s2[0], s2[1] - s2[2]))
        lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
        boots = np.asarray(boots) if boots else np.zeros((1, 2))
        speed_ci = np.percentile(boots[:, 0], [lo_q, hi_q])
        mix_ci = np.percentile(boots[:, 1], [lo_q, hi_q])
        total = p_a - p_b
        entry.update({
            "p95_before_ms": round(p_b, 3), "p95_after_ms": round(p_a, 3),
            "p95_after_at_before_mix_ms": round(p_rw, 3), "p95_change_ms": round(total, 3),
            "speed": {"ms": round(p_rw - p_b, 3), "ci_ms": [round(float(x), 3) for x in speed_ci], "ci_level": level},
            "mix": {"ms": round(p_a - p_rw, 3), "ci_ms": [round(float(x), 3) for x in mix_ci], "ci_level": level},
        })
        entry["basis"] = (f"p95 {total:+.2f} ms = mix {p_a - p_rw:+.2f} ms + per-request speed {p_rw - p_b:+.2f} ms "
                          f"(after-requests re-weighted to the before mix of {len(strata)} model × input-size strata)")
        out[route] = entry
    return out


def compare_analyses(before, after, constraints: Constraints, n_boot: int = 1000, level: float = 0.95) -> dict:
    """``compare`` of two analyses (sessions.offline.Analysis), with stages, findings and the mix check."""
    result = compare(durations_ms(before.store), durations_ms(after.store), constraints, n_boot=n_boot, level=level)
    result["stages"] = compare_stages(stage_times_ms(before.store), stage_times_ms(after.store), n_boot, level)
    result["findings"] = compare_findings(before.findings, after.findings)
    result["mix"] = compare_mix(strata_of(before.store), strata_of(after.store), level=level)
    return result


def _explain_markdown(result: dict) -> list[str]:
    lines: list[str] = []
    for route, st in result.get("stages", {}).items():
        lines += ["", f"### Stages: {md(route)}", "",
                  "| stage | p50 ms | p95 ms | p95 change (95% CI) | verdict |", "|---|---|---|---|---|"]
        for stage, e in st["stages"].items():
            c = e["change"]["p95"]
            lines.append(f"| {md(stage)} | {e['before']['p50_ms']:.1f} → {e['after']['p50_ms']:.1f} | "
                         f"{e['before']['p95_ms']:.1f} → {e['after']['p95_ms']:.1f} | {c['ms']:+.1f} "
                         f"[{c['ci_ms'][0]:+.1f}, {c['ci_ms'][1]:+.1f}] ms | **{e['verdict']}** |")
        for key, label in (("regressed", "Regressed"), ("improved", "Improved")):
            if st[key]:
                parts = []
                for stage in st[key]:
                    c = st["stages"][stage]["change"]["p95"]
                    parts.append(f"{md(stage)} {c['ms']:+.1f} ms [{c['ci_ms'][0]:+.1f}, {c['ci_ms'][1]:+.1f}]")
                lines.append(f"\n**{label} at p95:** " + "; ".join(parts))
    mix = result.get("mix", {})
    if mix:
        lines += ["", "### Mix or speed (p95)", "",
                  "| route | p95 change | from the mix (95% CI) | from per-request speed (95% CI) | strata |",
                  "|---|---|---|---|---|"]
        for route, m in mix.items():
            if "speed" not in m:
                lines.append(f"| {md(route)} | | | | {md(m.get('note', ''))} |")
                continue
            unmatched = (f", {m['unmatched_before_share']:.0%} of before traffic unmatched"
                         if m["unmatched_before_share"] else "")
            lines.append(f"| {md(route)} | {m['p95_change_ms']:+.1f} ms | {m['mix']['ms']:+.1f} "
                         f"[{m['mix']['ci_ms'][0]:+.1f}, {m['mix']['ci_ms'][1]:+.1f}] ms | {m['speed']['ms']:+.1f} "
                         f"[{m['speed']['ci_ms'][0]:+.1f}, {m['speed']['ci_ms'][1]:+.1f}] ms | {m['strata']}{unmatched} |")
    f = result.get("findings")
    if f is not None:
        lines += ["", "### Findings (warning and above)", ""]
        rows = ([f"- appeared: **{x['severity']}** `{md(x['rule'])}` — {md(x['summary'])}" for x in f["appeared"]] +
                [f"- went away: {x['severity']} `{md(x['rule'])}`" for x in f["went_away"]] +
                [f"- severity changed: `{md(x['rule'])}` {x['before']} → {x['after']}" for x in f["severity_changed"]] +
                [f"- still there: {x['severity']} `{md(x['rule'])}`" for x in f["unchanged"]])
        lines += rows or ["- none before or after"]
    return lines
