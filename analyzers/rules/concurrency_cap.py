"""concurrency-cap: the LLM engine's scheduler cap on running sequences binds, not its memory.

What: running requests (``vllm:num_requests_running``, SGLang ``num_running_reqs``, TGI batch size) pinned at
their cap for most of the busy scrapes, with requests waiting (``vllm:num_requests_waiting``) at the same time
while the KV cache (``vllm:kv_cache_usage_perc``) still has free blocks, and a material engine queue in the
LLM route's tail. vLLM does not export ``--max-num-seqs``, so the cap is the observed plateau: the most
requests ever running in the window.
Why: each engine step, vLLM's scheduler admits waiting requests until either the KV pool has no blocks for the
next prompt or ``max_num_seqs`` sequences are running. With blocks free and requests waiting, only the second
can be holding them: the engine decodes fewer sequences per step than its memory allows, and the rest wait a
whole generation for a slot.
Fix: raise ``--max-num-seqs`` (and ``--max-num-batched-tokens`` with it) toward what the KV cache holds
(``kv_cache_max_concurrency`` in ``vllm:cache_config_info``); watch KV usage and ITL after the change.
"""
from __future__ import annotations

import numpy as np

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import route_latency, stage_breakdown, tail_exemplars
from ..rule import Context, Need, Rule, Threshold

ID = "concurrency-cap"
TITLE = "LLM scheduler cap binds: requests wait with KV blocks free"


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    s = sig.scheduler(store)
    if s is None or not np.isfinite(s["running"]).any():
        return [not_evaluated(ID, TITLE, "no running-request samples")]
    if not np.isfinite(s["waiting"]).any() or not np.isfinite(s["kv"]).any():
        missing = [n for n, k in (("waiting-request", "waiting"), ("KV-cache usage", "kv")) if not np.isfinite(s[k]).any()]
        return [not_evaluated(ID, TITLE, f"no {' and no '.join(missing)} samples: without them a cap on running "
                                         "requests cannot be told from a full KV cache or an idle engine")]
    ok = np.isfinite(s["running"]) & np.isfinite(s["waiting"])
    running, waiting, kv = s["running"], s["waiting"], s["kv"]
    busy = ok & ((running > 0) | (waiting > 0))
    if busy.sum() < th["min_scrapes"]:
        return []
    cap = float(running[busy].max())
    if cap < 1:
        return []
    pinned = busy & (running >= cap)
    blocked = pinned & (waiting >= 1)
    pinned_share = float(pinned.sum()) / float(busy.sum())
    blocked_share = float(blocked.sum()) / float(busy.sum())
    if pinned_share < th["min_pinned_share"] or blocked_share < th["min_waiting_share"]:
        return []
    kv_blocked = kv[blocked & np.isfinite(kv)]
    if not len(kv_blocked):
        return []
    kv_p95 = float(np.percentile(kv_blocked, 95))
    if kv_p95 >= th["kv_free_below"]:
        return []  # memory, not the cap, may be what holds them (kv-cache-pressure)
    reqs = sig.engine_requests(store)
    breakdown = stage_breakdown(store)
    out = []
    for route in sorted({r["route"] for r in reqs}):
        q = breakdown.get(route, {}).get("queue")
        if not q or q["p95_share"] < th["min_queue_share"]:
            continue
        p95 = route_latency(store)[route]["p95_ms"]
        calm = [r["queue"] for r in reqs if r["route"] == route and r["queue"] is not None
                and sig.at(s, "waiting", r["start_s"]) == 0]
        kept_ms = float(np.median(calm)) * 1e3 if calm else 0.0
        out.append(Finding(
            rule=ID, severity="warning", title=TITLE,
            summary=(f"{route}: {cap:.0f} request(s) running in {pinned_share:.0%} of the busy scrapes, with up to "
                     f"{waiting[blocked].max():.0f} waiting in {blocked_share:.0%} of them while the KV cache was only "
                     f"{kv_p95:.0%} used (p95): the scheduler's cap (--max-num-seqs), not memory, holds them; "
                     f"the engine queue is {q['p95_share']:.0%} of the p95 tail (queue p95 {q['p95_ms']:.0f} ms)."),
            scope={"route": route},
            evidence={"cap_running": cap, "cap_source": "observed plateau (vLLM exports no max_num_seqs)",
                      "busy_scrapes": int(busy.sum()), "pinned_share": round(pinned_share, 3),
                      "waiting_while_pinned_share": round(blocked_share, 3),
                      "max_waiting": float(waiting[blocked].max()), "kv_usage_p95_while_waiting": round(kv_p95, 4),
                      "queue_p95_share": q["p95_share"], "queue_p95_ms": q["p95_ms"],
                      "queue_ms_while_none_waiting": round(kept_ms, 3), "saving_basis": "ttft",
                      "exemplar_trace_ids": tail_exemplars(store, "queue", route)},
            confidence=min(1.0, float(busy.sum()) / 20),
            remediations=scored(["raise-max-num-seqs", "autoscale"], ctx.constraints.scorecard),
            impact_ms=max(q["p95_share"] * p95 - kept_ms, 0.0)))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="capacity",
    thresholds={
        "min_pinned_share": Threshold(0.6, "fraction", "busy scrapes with the running count at its plateau: a cap "
                                      "holds the count flat, a load peak touches it once"),
        "min_waiting_share": Threshold(0.25, "fraction", "busy scrapes with requests waiting while running is at "
                                       "the cap: the scheduler had work it did not admit"),
        "kv_free_below": Threshold(0.8, "fraction", "KV usage (p95 while requests wait) below which blocks are "
                                   "free for them: at 0.8 a fifth of the pool, several prompts' worth, is unused"),
        "min_queue_share": Threshold(0.10, "fraction", "engine queue share of the p95 tail from which the wait "
                                     "is material"),
        "min_scrapes": Threshold(5, "buckets", "busy scrapes needed to call a plateau"),
    },
    causes=(("queueing-growth", "requests queue for a running slot the scheduler's cap withholds"),),
    requires=(Need(metrics=sig.RUNNING, what="running-request metrics"),),
    doc=__doc__, detect=detect)
