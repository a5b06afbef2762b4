"""gpu-underutilized: the accelerator is mostly idle while requests wait.

What: mean GPU utilization (DCGM ``DCGM_FI_DEV_GPU_UTIL`` %, ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` or Triton
``nv_gpu_utilization``) below the threshold while there is latency pressure: queueing in the p95 tail,
pending requests, or p95 above the SLO.
A service that meets its p95 SLO (triage.toml) is not under pressure: an idle GPU there is a cost question.
Why: requests queue for a device that is idle most of the time — execution is serialized (batch size 1,
one instance) or starved by host-side work, so adding GPUs would not help.
Fix: enable/tune dynamic batching, add model instances, tune the runtime.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import PENDING

from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import TAIL_COHORT_SQL, route_latency, stage_breakdown, tail_exemplars
from ..metrics import BATCH_SIZE, GPU_UTIL, gpu_utilization, series, triton_batch_size
from ..rule import Context, Need, Rule, Threshold

ID = "gpu-underutilized"
TITLE = "GPU underutilized while requests wait"


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    gpus = gpu_utilization(store)
    if not gpus:
        return [not_evaluated(ID, TITLE, "no GPU utilization metrics (DCGM_FI_DEV_GPU_UTIL, "
                                         "DCGM_FI_PROF_GR_ENGINE_ACTIVE or nv_gpu_utilization)")]
    per_gpu = {}
    for s, scale in gpus:
        vals = s.values[np.isfinite(s.values)] * scale
        if len(vals):
            gpu = s.labels.get("gpu") or s.labels.get("UUID") or s.labels.get("gpu_uuid") or s.key
            per_gpu.setdefault(gpu, {"metric": s.metric, "mean": float(vals.mean()),
                                     "p95": float(np.percentile(vals, 95)), "samples": int(len(vals))})
    if not per_gpu:
        return [not_evaluated(ID, TITLE, "GPU utilization series hold no finite samples")]
    mean_util = float(np.mean([g["mean"] for g in per_gpu.values()]))
    if mean_util >= th["utilization"]:
        return []

    slo_p95 = ctx.constraints.slo.get("p95_ms")
    lat = route_latency(store)
    if slo_p95 and lat and all(v["p95_ms"] <= slo_p95 for v in lat.values()):
        return []  # the service meets its latency SLO: an idle GPU is a cost question (cost-per-inference)
    pressure = []
    queue_share = 0.0
    breakdown = stage_breakdown(store)
    for route, stages in breakdown.items():
        q = stages.get("queue", {}).get("p95_share", 0.0)
        queue_share = max(queue_share, q)
    if queue_share >= th["queue_share"] and (wait_vs_run := _tail_queue_over_inference(store)) >= th["queue_to_compute"]:
        pressure.append(f"queueing is {queue_share:.0%} of the p95 tail ({wait_vs_run:.1f}x the compute time)")
    pending_mean = None
    pend = series(store, PENDING)
    if pend:
        pending_mean = float(np.mean(np.concatenate([s.values for s in pend])))
        if pending_mean >= th["pending"]:
            pressure.append(f"{pending_mean:.1f} requests pending on average")
    worst = max(lat.items(), key=lambda kv: kv[1]["p95_ms"], default=None)
    if slo_p95 and worst and worst[1]["p95_ms"] > slo_p95:
        pressure.append(f"p95 {worst[1]['p95_ms']:.0f} ms is above the {slo_p95:.0f} ms SLO")
    if not pressure:
        return []

    batch = triton_batch_size(store)
    exemplars = tail_exemplars(store, "queue")
    queue_ms = max((st.get("queue", {}).get("p95_ms", 0.0) for st in breakdown.values()), default=0.0)
    batch_note = ""
    if batch:
        batch_note = "; average batch size " + ", ".join(f"{m} {b:.1f}" for m, b in batch.items())
    severity = "warning"  # the saving on p95 sets it (analyzers/impact.py)
    return [Finding(
        rule=ID, severity=severity, title=TITLE,
        summary=(f"GPU busy {mean_util:.0%} on average (threshold {th['utilization']:.0%}) while "
                 f"{' and '.join(pressure)}{batch_note}."),
        scope={"gpus": sorted(per_gpu)},
        evidence={"mean_utilization": round(mean_util, 4), "threshold": th["utilization"],
                  "per_gpu": {k: {kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in v.items()}
                              for k, v in per_gpu.items()},
                  "queue_p95_share": round(queue_share, 4), "queue_p95_ms": queue_ms,
                  "pending_mean": None if pending_mean is None else round(pending_mean, 3),
                  "avg_batch_size": batch, "pressure": pressure, "exemplar_trace_ids": exemplars},
        confidence=min(1.0, 0.5 + (th["utilization"] - mean_util) / th["utilization"]) * (1.0 if len(pressure) > 1 else 0.8),
        remediations=scored(["enable-dynamic-batching", "increase-instances", "runtime-tuning"],
                            ctx.constraints.scorecard),
        # the queue time of the tail (queue share of the tail x p95 of the slowest route), which batching or
        # more instances on the idle device take away
        impact_ms=queue_share * (worst[1]["p95_ms"] if worst else 0.0))]


def _tail_queue_over_inference(store) -> float:
    """Median over the p95 tail of queue time divided by inference time: do requests wait longer than they run?"""
    v = store.scalar(f"""
        WITH tail AS ({TAIL_COHORT_SQL}),
        per AS (SELECT t.trace_id, t.root_id,
                       sum(rs.ns) FILTER (WHERE rs.stage = 'queue') AS q,
                       sum(rs.ns) FILTER (WHERE rs.stage = 'inference') AS i
                FROM tail t JOIN request_stages rs ON rs.trace_id = t.trace_id AND rs.root_id = t.root_id
                GROUP BY ALL)
        SELECT median(coalesce(q, 0) / nullif(i, 0)) FROM per""")
    return float(v) if v is not None else 0.0


RULE = Rule(
    id=ID, title=TITLE, category="accelerator",
    thresholds={
        "utilization": Threshold(0.40, "fraction", "mean GPU busy below which the GPU counts as underutilized"),
        "queue_share": Threshold(0.15, "fraction", "queue share of the p95 tail that counts as pressure"),
        "queue_to_compute": Threshold(1.5, "ratio", "tail requests must wait this many times longer than they "
                                      "compute: one request queued behind another is not pressure"),
        "pending": Threshold(1.0, "requests", "mean pending requests that count as pressure"),
    },
    causes=(
           ('queueing-growth', 'serialized execution on an idle GPU is what queues'),),
    requires=(Need(metrics=tuple(GPU_UTIL), what="GPU utilization metrics"),),
    metrics=tuple(GPU_UTIL) + PENDING + BATCH_SIZE,
    doc=__doc__, detect=detect)
