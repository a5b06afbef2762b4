"""memory-pressure: accelerator memory near capacity, or out-of-memory errors in the traces.

What: GPU memory used over total (DCGM ``DCGM_FI_DEV_FB_USED`` / (used + ``..._FB_FREE``), Triton
``nv_gpu_memory_used_bytes`` / ``nv_gpu_memory_total_bytes``, vLLM ``kv_cache_usage_perc``) at or above the
threshold, or error spans saying out of memory / OOM.
Why: near capacity, allocators fragment, batch sizes and KV caches cannot grow, and the next long input
fails or evicts; OOMs turn into errors and restarts (and cold starts).
Fix: cap batch size or KV cache, quantize, shard or move to a larger device.
"""
from __future__ import annotations

import numpy as np

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..metrics import series
from ..rule import Context, Need, Rule, Threshold

# the memory families read below (used with free or total; vLLM's KV cache usage)
MEMORY_METRICS = ("DCGM_FI_DEV_FB_USED", "nv_gpu_memory_used_bytes", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
READS = MEMORY_METRICS + ("DCGM_FI_DEV_FB_FREE", "nv_gpu_memory_total_bytes")

ID = "memory-pressure"
TITLE = "Accelerator memory near capacity"


def _usage(store) -> dict[str, np.ndarray]:
    """Per device: used fraction over time."""
    out: dict[str, np.ndarray] = {}
    pairs = (("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "free"),
             ("nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "total"))
    for used_m, other_m, kind in pairs:
        used = {s.key.replace(used_m, ""): s for s in series(store, [used_m])}
        other = {s.key.replace(other_m, ""): s for s in series(store, [other_m])}
        for k, u in used.items():
            o = other.get(k)
            if o is None or len(o.values) != len(u.values):
                continue
            total = u.values + o.values if kind == "free" else o.values
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(total > 0, u.values / total, np.nan)
            out[f"{used_m.split('_')[0]}{k}"] = frac[np.isfinite(frac)]
    for s in series(store, ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]):
        out[s.key] = s.values[np.isfinite(s.values)]
    return {k: v for k, v in out.items() if len(v)}


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    usage = _usage(store)
    ooms = store.query("""
        SELECT trace_id, service FROM spans WHERE status_code = 2 AND regexp_matches(lower(coalesce(status_message, '')
               || ' ' || coalesce(json_extract_string(attributes, '$."exception.message"'), '')),
               'out of memory|\\boom\\b|oomkilled|cuda error: out of memory')""")
    if not usage and not ooms:
        return [not_evaluated(ID, TITLE, "no GPU memory metrics (DCGM FB used/free, nv_gpu_memory_*, "
                                         "vllm:kv_cache_usage_perc) and no out-of-memory errors")]
    out = []
    for dev, frac in usage.items():
        p95 = float(np.percentile(frac, 95))
        if p95 < th["used_fraction"]:
            continue
        out.append(Finding(
            rule=ID, severity="critical" if p95 >= th["critical_fraction"] else "warning", title=TITLE,
            summary=f"{dev}: memory {p95:.0%} used at p95 (max {frac.max():.0%}); growth room is gone.",
            scope={"device": dev},
            evidence={"used_fraction_p95": round(p95, 4), "used_fraction_max": round(float(frac.max()), 4),
                      "samples": int(len(frac)), "threshold": th["used_fraction"]},
            confidence=min(1.0, len(frac) / 20), remediations=scored(["reduce-memory"], ctx.constraints.scorecard),
            impact_ms=0.0))
    if ooms:
        out.append(Finding(
            rule=ID, severity="critical", title="Out-of-memory errors",
            summary=f"{len(ooms)} span(s) failed with out-of-memory errors ({', '.join(sorted({o[1] for o in ooms}))}).",
            evidence={"oom_spans": len(ooms), "exemplar_trace_ids": [o[0] for o in ooms[:3]]},
            confidence=0.95, remediations=scored(["reduce-memory"], ctx.constraints.scorecard), impact_ms=0.0))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="accelerator",
    thresholds={
        "used_fraction": Threshold(0.90, "fraction", "memory used (p95 over the window) at which it fires"),
        "critical_fraction": Threshold(0.97, "fraction", "memory used at which it is critical"),
    },
    severity_from="rule",  # a breached constraint, not a latency saving
    requires=(Need(metrics=MEMORY_METRICS, what="GPU memory metrics"), Need(error_spans=True)),
    metrics=READS,
    doc=__doc__, detect=detect)
