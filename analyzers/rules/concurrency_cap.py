"""concurrency-cap: the LLM engine's scheduler cap on running sequences binds, not its memory.

What: running requests pinned at their cap for most of the busy time, with requests waiting at the same time,
while the KV cache (``vllm:kv_cache_usage_perc``) still has free blocks (below ``kv_free_below``, or, for a small
pool, below the point where the median prompt's blocks no longer fit) and no sequence was preempted, and a
material engine queue in the LLM route's tail. Running and waiting come from the engine spans when present (each request waits
``time_in_queue`` from its arrival, then runs its prefill and decode: exact), else from the gauges
``vllm:num_requests_running``/``_waiting`` (SGLang, TGI alike) per scrape. The gauges are the last engine
step's snapshot, so between two requests of a capped engine they read 0 running with requests waiting: the
spans are preferred. vLLM does not export ``--max-num-seqs``, so the cap is the observed plateau: the most
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

from triage.collectors.metric_catalogue import KV_USAGE, PREEMPTIONS

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..latency import tail_exemplars
from ..rule import Context, Need, Rule, Threshold

ID = "concurrency-cap"
TITLE = "LLM scheduler cap binds: requests wait with KV blocks free"


def _plateau(pieces, th: dict) -> dict | None:
    """From (weight, running, waiting) pieces: the cap (most running), the busy weight's share pinned at it and
    pinned with requests waiting; None when too little was busy."""
    busy = [(w, r, q) for w, r, q in pieces if r > 0 or q > 0]
    total = sum(w for w, _, _ in busy)
    if not busy or total <= 0:
        return None
    level: dict[int, float] = {}
    for w, r, _ in busy:
        level[int(r)] = level.get(int(r), 0.0) + w
    # the cap: the highest running count held for a material part of the busy time (a count touched for a
    # moment, as one request ends while the next starts, is a transient)
    cap = max((r for r, w in level.items() if w >= th["cap_level_share"] * total), default=0)
    pinned = sum(w for w, r, _ in busy if r >= cap)
    blocked = sum(w for w, r, q in busy if r >= cap and q >= 1)
    return {"cap": float(cap), "pinned_share": pinned / total, "blocked_share": blocked / total,
            "max_waiting": float(max((q for _, r, q in busy if r >= cap), default=0))}


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    s = sig.scheduler(store)
    if s is None or not np.isfinite(s["kv"]).any():
        return [not_evaluated(ID, TITLE, "no KV-cache usage samples: without them a cap on running requests "
                                         "cannot be told from a full KV cache")]
    reqs = sig.engine_requests(store)
    pieces = sig.occupancy(reqs)
    if pieces:
        source = "engine spans (arrival, time_in_queue, prefill, decode)"
    else:
        ok = np.isfinite(s["running"]) & np.isfinite(s["waiting"])
        if ok.sum() < th["min_scrapes"]:
            return [not_evaluated(ID, TITLE, "no engine spans and too few running/waiting samples")]
        pieces = [(1.0, r, q) for r, q in zip(s["running"][ok], s["waiting"][ok])]
        source = "scheduler gauges (vllm:num_requests_running / _waiting), per scrape"
    p = _plateau(pieces, th)
    if p is None or p["cap"] < 1 or p["pinned_share"] < th["min_pinned_share"] \
            or p["blocked_share"] < th["min_waiting_share"]:
        return []
    cap, pinned_share, blocked_share = p["cap"], p["pinned_share"], p["blocked_share"]
    # the cache while requests waited (scrapes with some waiting; all busy scrapes if none shows it)
    kv, waiting, running = s["kv"], s["waiting"], s["running"]
    sel = np.isfinite(kv) & (np.nan_to_num(waiting) >= 1)
    if not sel.any():
        sel = np.isfinite(kv) & ((np.nan_to_num(running) > 0) | (np.nan_to_num(waiting) > 0))
    if not sel.any():
        return []
    kv_p95 = float(np.percentile(kv[sel], 95))
    free_below, free_why = sig.kv_full_from(store, th["kv_free_below"], f"[{ID}] kv_free_below", reqs)
    if kv_p95 >= free_below:
        return []  # memory, not the cap, may be what holds them (kv-cache-pressure)
    preempted = sig.preemptions(store)
    if (preempted or 0.0) >= 1:
        return []  # the cache did run out (a sequence was evicted): more sequences would make that worse
    out = []
    # with KV blocks free, the cap is all that held them: what stays is the queue of requests that arrived
    # while nothing waited
    for t in sig.queue_tails(store, reqs, th["min_queue_share"], lambda r: sig.at(s, "waiting", r["start_s"]) == 0):
        route, q, kept_ms = t["route"], t["q"], t["kept_ms"]
        out.append(Finding(
            rule=ID, severity="warning", title=TITLE,
            summary=(f"{route}: {cap:.0f} request(s) running {pinned_share:.0%} of the busy time, with up to "
                     f"{p['max_waiting']:.0f} waiting for {blocked_share:.0%} of it while the KV cache was only "
                     f"{kv_p95:.0%} used (p95): the scheduler's cap (--max-num-seqs), not memory, holds them; "
                     f"the engine queue is {q['p95_share']:.0%} of the p95 tail (queue p95 {q['p95_ms']:.0f} ms)."),
            scope={"route": route},
            evidence={"cap_running": cap, "cap_source": "observed plateau (vLLM exports no max_num_seqs)",
                      "occupancy_source": source, "pinned_share": round(pinned_share, 3),
                      "waiting_while_pinned_share": round(blocked_share, 3),
                      "max_waiting": p["max_waiting"], "kv_usage_p95_while_waiting": round(kv_p95, 4),
                      "kv_free_below": round(free_below, 4), "kv_free_why": free_why, "preemptions": preempted,
                      "queue_p95_share": q["p95_share"], "queue_p95_ms": q["p95_ms"],
                      "queue_ms_while_none_waiting": round(kept_ms, 3), "saving_basis": "ttft",
                      "exemplar_trace_ids": tail_exemplars(store, "queue", route)},
            confidence=min(1.0, len(pieces) / 40),
            remediations=scored(["raise-max-num-seqs", "autoscale"], ctx.constraints.scorecard),
            impact_ms=t["saving_ms"]))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="capacity",
    thresholds={
        "min_pinned_share": Threshold(0.6, "fraction", "busy time with the running count at its plateau: a cap "
                                      "holds the count flat, a load peak touches it once"),
        "min_waiting_share": Threshold(0.25, "fraction", "busy time with requests waiting while running is at "
                                       "the cap: the scheduler had work it did not admit"),
        "kv_free_below": Threshold(0.8, "fraction", "KV usage (p95 while requests wait) below which blocks are "
                                   "free for them: at 0.8 a fifth of the pool, several prompts' worth, is unused"),
        "min_queue_share": Threshold(0.10, "fraction", "engine queue share of the p95 tail from which the wait "
                                     "is material"),
        "cap_level_share": Threshold(0.1, "fraction", "busy time a running count must hold to be the plateau: "
                                     "shorter is a transient (one request ending as the next starts, the few ms "
                                     "between a span's arrival and its queue entry)"),
        "min_scrapes": Threshold(5, "buckets", "scrapes needed to call a plateau from the gauges alone"),
    },
    causes=(("queueing-growth", "requests queue for a running slot the scheduler's cap withholds"),),
    requires=(Need(metrics=KV_USAGE, what="KV-cache usage metrics"),),
    metrics=sig.SCHEDULER + sig.KV_FULL + PREEMPTIONS,
    doc=__doc__, detect=detect)
