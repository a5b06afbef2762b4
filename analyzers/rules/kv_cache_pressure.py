"""kv-cache-pressure: the LLM engine's KV cache is full, so requests wait for KV blocks or get preempted.

What: KV-cache usage (vLLM ``vllm:kv_cache_usage_perc``, older ``vllm:gpu_cache_usage_perc``; SGLang
``sglang:token_usage``) at or above ``used_fraction`` at p95 over the busy scrapes (earlier for a small pool: once the median prompt's blocks no longer fit), together with preemptions
(``vllm:num_preemptions``) or requests waiting (``vllm:num_requests_waiting``) while the cache is that full,
and a material engine queue in the tail (``gen_ai.latency.time_in_queue`` of the LLM route's tail cohort).
Why: vLLM stores every running sequence's keys and values in fixed-size KV blocks (``block_size`` tokens) from
one pool (``num_gpu_blocks``). The scheduler admits a waiting request only when its prompt's blocks are free,
and each decode step can need one more block per sequence; when the pool is full, new requests stay in the
waiting queue (reason ``capacity``) and running ones are preempted (their KV freed and recomputed later). The
queue, not the model, is then the time to first token.
Fix: give the KV cache more memory (``--gpu-memory-utilization``), make each sequence need fewer blocks
(a smaller ``--max-model-len``, ``--kv-cache-dtype fp8``), spread the cache over more GPUs (tensor parallel),
or admit fewer sequences at once (a lower ``--max-num-seqs``) so the admitted ones are not preempted.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import KV_USAGE, PREEMPTIONS, QUEUE

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import tail_exemplars
from ..metrics import histogram_quantiles
from ..rule import Context, Need, Rule, Threshold

ID = "kv-cache-pressure"
TITLE = "LLM KV cache full: requests wait for KV blocks"
FIXES = ["kv-cache-memory", "lower-max-num-seqs", "autoscale"]


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    sched = sig.scheduler(store)
    kv_ok = sched["kv"][np.isfinite(sched["kv"])] if sched else np.array([])
    if not len(kv_ok):
        return [not_evaluated(ID, TITLE, "no finite KV-cache usage samples")]
    reqs = sig.engine_requests(store)
    full, full_why = sig.kv_full_from(store, th["used_fraction"], f"[{ID}] used_fraction", reqs)
    # the scrapes where the engine had work (idle scrapes say nothing about its cache under load)
    busy = np.isfinite(sched["kv"]) & ~((np.nan_to_num(sched["running"]) == 0) & (np.nan_to_num(sched["waiting"]) == 0))
    if not busy.any():
        return []
    kv_busy = sched["kv"][busy]
    kv_p95 = float(np.percentile(kv_busy, 95))
    if kv_p95 < full:
        return []
    high = busy & (sched["kv"] >= full)
    waiting_high = sched["waiting"][high & np.isfinite(sched["waiting"])]
    max_waiting = float(waiting_high.max()) if len(waiting_high) else 0.0
    preempted = sig.preemptions(store)
    if (preempted or 0.0) < th["min_preemptions"] and max_waiting < th["min_waiting"]:
        return []
    ev = {"kv_metric": sched["kv_metric"], "kv_usage_p95_busy": round(kv_p95, 4),
          "kv_usage_max": round(float(kv_ok.max()), 4), "kv_full_from": round(full, 4), "kv_full_why": full_why,
          "busy_scrapes": int(busy.sum()), "busy_scrapes_kv_full_share": round(float(high.sum()) / int(busy.sum()), 3),
          "max_waiting_while_kv_full": max_waiting, "preemptions": preempted, "saving_basis": "ttft"}
    why = (f"KV cache {kv_p95:.0%} used at p95 of {int(busy.sum())} busy scrapes (full from {full_why})"
           + (f", {preempted:.0f} preemption(s)" if preempted else "")
           + (f", up to {max_waiting:.0f} request(s) waiting while it was full" if max_waiting else ""))
    routes = sorted({r["route"] for r in reqs})
    out = []
    # what stays after the fix: the queue of the route's requests that arrived while the cache had room and
    # nothing was waiting (once a backlog exists, arrivals queue behind it whatever the cache holds)
    calm = lambda r: sig.kv_at(sched, r["start_s"]) < full and sig.at(sched, "waiting", r["start_s"]) == 0  # noqa: E731
    for t in sig.queue_tails(store, reqs, th["min_queue_share"], calm):
        route, q, kept_ms = t["route"], t["q"], t["kept_ms"]
        out.append(Finding(
            rule=ID, severity="warning", title=TITLE,
            summary=(f"{route}: {why}; the engine queue is {q['p95_share']:.0%} of the p95 tail "
                     f"(queue p95 {q['p95_ms']:.0f} ms, {kept_ms:.0f} ms median while the cache had room)."),
            scope={"route": route},
            evidence={**ev, "queue_p95_share": q["p95_share"], "queue_p95_ms": q["p95_ms"],
                      "queue_ms_while_kv_had_room": round(kept_ms, 3), "requests_while_kv_had_room": t["kept_n"],
                      "exemplar_trace_ids": tail_exemplars(store, "queue", route)},
            confidence=min(1.0, len(kv_ok) / 20),
            remediations=scored(FIXES, ctx.constraints.scorecard),
            impact_ms=t["saving_ms"]))
    if not routes:  # metrics only: the engine's queue-time histogram
        for model, h in histogram_quantiles(store, QUEUE).items():
            qp95 = h["q"].get(0.95)
            if qp95 is None:
                continue
            out.append(Finding(
                rule=ID, severity="warning", title=TITLE,
                summary=f"{model}: {why}; engine queue p95 {qp95 * 1e3:.0f} ms ({h['metric']}).",
                evidence={**ev, "source": h["metric"], "queue_p95_ms": round(qp95 * 1e3, 3)},
                confidence=min(1.0, len(kv_ok) / 20), remediations=scored(FIXES, ctx.constraints.scorecard),
                impact_ms=qp95 * 1e3))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="capacity",
    thresholds={
        "used_fraction": Threshold(0.90, "fraction", "KV blocks in use (p95 over the busy scrapes) from which the "
                                   "pool is full: the next prompt's blocks and the running sequences' next decode "
                                   "blocks no longer fit, so the scheduler queues or preempts. A small pool "
                                   "(vllm:cache_config_info) is full earlier: once the median prompt's blocks "
                                   "(ceil(tokens / block_size)) exceed what is free"),
        "min_preemptions": Threshold(1, "requests", "preemptions in the window: one means a running sequence "
                                     "found no free block for its next token and was evicted"),
        "min_waiting": Threshold(1, "requests", "requests waiting while the cache is that full: the scheduler "
                                 "holds a request only when it cannot admit it"),
        "min_queue_share": Threshold(0.10, "fraction", "engine queue share of the p95 tail from which the wait "
                                     "is material (below, the tail is prefill/decode, not admission)"),
    },
    causes=(("queueing-growth", "requests queue because the KV cache has no free blocks for them"),
            ("memory-pressure", "the accelerator memory that is full is the KV cache the engine reserved")),
    requires=(Need(metrics=KV_USAGE, what="KV-cache usage metrics"),),
    metrics=sig.SCHEDULER + sig.KV_FULL + PREEMPTIONS + QUEUE,
    doc=__doc__, detect=detect)
