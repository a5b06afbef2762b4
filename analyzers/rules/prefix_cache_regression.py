"""prefix-cache-regression: the LLM engine's prefix cache hits less than it did earlier in the window, and the
time to first token rises with it.

What: the prefix cache hit rate (tokens found in the cache over tokens looked up: ``vllm:prefix_cache_hits`` /
``vllm:prefix_cache_queries``, older ``vllm:gpu_prefix_cache_hits``/``_queries``; else the older hit-rate gauges
``vllm:gpu_prefix_cache_hit_rate``, ``sglang:cache_hit_rate``) in the last third of the window against the first
third, with enough tokens looked up in each. Fires when the share of prompt tokens that must be computed (1 - hit
rate) grew by ``min_uncached_growth`` and the hit rate fell by ``min_drop``, while TTFT rose by ``min_ttft_rise``
(the engine spans' ``gen_ai.latency.time_to_first_token``, else the ``vllm:time_to_first_token_seconds``
histogram's mean per third).
Why: with automatic prefix caching, vLLM keeps the KV blocks of earlier prompts (hashed per full block of
``block_size`` tokens) and a new prompt that starts with the same blocks skips their prefill. Prefill compute is
proportional to the tokens not found in the cache, so when the hit rate falls from h1 to h2 each prompt's
prefill grows by (1 - h2) / (1 - h1), and the first token comes later. The usual causes: the shared prefix
changed (a system prompt or template edited, or made unique by a timestamp or request id near its start),
the cached blocks were evicted (the KV cache is full of other work, see ``kv-cache-pressure``), or requests
with a common prefix no longer reach the same replica.
Fix: keep the shared part of prompts identical and first (variable parts after it), route requests with the
same prefix to the same replica (prefix-aware routing), and give the KV cache room to keep hot prefixes.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import PREFILL, PREFIX_HIT_RATE, PREFIX_HITS, PREFIX_QUERIES, TTFT

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..rule import Context, Need, Rule, Threshold

ID = "prefix-cache-regression"
TITLE = "LLM prefix cache hits less than before, and TTFT rises"


def _thirds(ts_ms: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the first and the last third of [lo, hi] (ms) over ``ts_ms``."""
    third = (hi - lo) / 3
    return ts_ms <= lo + third, ts_ms > hi - third


def _hit_rates(store, lo: int, hi: int, th: dict) -> dict | None:
    """Hit rate in the first and last thirds, from the counters (tokens) or else the hit-rate gauges."""
    ts, q = sig.counter_steps(store, PREFIX_QUERIES)
    if len(ts):
        ts_h, h = sig.counter_steps(store, PREFIX_HITS)
        if not len(ts_h):
            return {"why": "prefix-cache queries without the hits counter"}
        hits = dict(zip(ts_h.tolist(), h.tolist()))
        h = np.array([hits.get(t, np.nan) for t in ts.tolist()])
        ok = np.isfinite(h)
        early, late = _thirds(ts, lo, hi)
        qe, ql = float(q[early & ok].sum()), float(q[late & ok].sum())
        if min(qe, ql) < th["min_queried_tokens"]:
            return {"why": f"fewer than {th['min_queried_tokens']:.0f} prefix-cache lookups (tokens) in the first "
                           f"or last third of the window ({qe:.0f}, {ql:.0f})"}
        return {"early": float(h[early & ok].sum()) / qe, "late": float(h[late & ok].sum()) / ql,
                "source": "counters (hits / queries, tokens)", "queried_early": qe, "queried_late": ql}
    for name in PREFIX_HIT_RATE:
        g = sig.gauge(store, [name], "max")
        if not g:
            continue
        ts = np.array(sorted(g), dtype=np.int64)
        v = np.array([g[t] for t in ts.tolist()])
        early, late = _thirds(ts, lo, hi)
        if min(early.sum(), late.sum()) < th["min_scrapes"]:
            return {"why": f"fewer than {th['min_scrapes']:.0f} {name} samples in the first or last third"}
        return {"early": float(np.mean(v[early])), "late": float(np.mean(v[late])), "source": f"gauge {name}",
                "queried_early": None, "queried_late": None}
    return None


def _ttft(store, lo: int, hi: int, reqs: list[dict]) -> dict | None:
    """TTFT and prefill (ms) in the first and last thirds: from the engine spans (median TTFT, p95 prefill),
    else from the histograms' means per third."""
    r_ttft = [(r["start_s"] * 1e3, r["ttft"], r["prefill"]) for r in reqs if r["ttft"] is not None]
    if r_ttft:
        t = np.array([x[0] for x in r_ttft])
        early, late = _thirds(t, lo, hi)
        if early.sum() and late.sum():
            ttft = np.array([x[1] for x in r_ttft]) * 1e3
            pre = np.array([np.nan if x[2] is None else x[2] for x in r_ttft]) * 1e3
            pe, pl = pre[early][np.isfinite(pre[early])], pre[late][np.isfinite(pre[late])]
            return {"early": float(np.median(ttft[early])), "late": float(np.median(ttft[late])),
                    "source": "engine spans (median per third)",
                    "prefill_rise_ms": float(np.percentile(pl, 95) - np.percentile(pe, 95)) if len(pe) and len(pl)
                    else 0.0, "prefill_source": "p95 of gen_ai.latency.time_in_model_prefill per third"}
    name, ts, s, c = sig.histogram_steps(store, TTFT)
    if name is None:
        return None
    early, late = _thirds(ts, lo, hi)
    if not c[early].sum() or not c[late].sum():
        return None
    out = {"early": float(s[early].sum() / c[early].sum()) * 1e3, "late": float(s[late].sum() / c[late].sum()) * 1e3,
           "source": f"{name} (mean per third)", "prefill_rise_ms": 0.0, "prefill_source": "none"}
    pname, pts, ps, pc = sig.histogram_steps(store, PREFILL)
    if pname is not None:
        pe, pl = _thirds(pts, lo, hi)
        if pc[pe].sum() and pc[pl].sum():
            out["prefill_rise_ms"] = float(ps[pl].sum() / pc[pl].sum() - ps[pe].sum() / pc[pe].sum()) * 1e3
            out["prefill_source"] = f"{pname} (mean per third)"
    return out


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    lo, hi = store.query("SELECT min(ts_ms), max(ts_ms) FROM samples WHERE metric IN ("
                         + ", ".join("?" * len(PREFIX_QUERIES + PREFIX_HIT_RATE)) + ")",
                         list(PREFIX_QUERIES + PREFIX_HIT_RATE))[0]
    if lo is None or hi <= lo:
        return [not_evaluated(ID, TITLE, "prefix-cache metrics from a single scrape: no earlier level to compare")]
    rates = _hit_rates(store, lo, hi, th)
    if rates is None or "why" in rates:
        return [not_evaluated(ID, TITLE, rates["why"] if rates else "no prefix-cache hit/query samples")]
    reqs = sig.engine_requests(store)
    ttft = _ttft(store, lo, hi, reqs)
    if ttft is None:
        return [not_evaluated(ID, TITLE, "no TTFT in the first and last thirds of the window (engine spans or "
                                         "the TTFT histogram)")]
    h1, h2 = rates["early"], rates["late"]
    growth = (1 - h2) / (1 - h1) if h1 < 1 else float("inf")
    if h1 - h2 < th["min_drop"] or growth < th["min_uncached_growth"] \
            or ttft["late"] < th["min_ttft_rise"] * ttft["early"]:
        return []
    # one engine-wide finding: scoped to the LLM route when the spans name exactly one
    routes = sorted({r["route"] for r in reqs})
    route = routes[0] if len(routes) == 1 else None
    return [Finding(
        rule=ID, severity="warning", title=TITLE,
        summary=(f"{route + ': ' if route else ''}prefix cache hit rate {h2:.0%} in the last third of the window "
                 f"against {h1:.0%} in the first ({rates['source']}): prompts now compute "
                 + (f"{growth:.1f}x the tokens they did" if np.isfinite(growth)
                    else "tokens that all came from the cache before")
                 + f"; TTFT {ttft['early']:.0f} -> {ttft['late']:.0f} ms ({ttft['source']})."),
        scope={"route": route} if route else {},
        evidence={"hit_rate_early": round(h1, 4), "hit_rate_late": round(h2, 4), "hit_source": rates["source"],
                  "queried_tokens_early": rates["queried_early"], "queried_tokens_late": rates["queried_late"],
                  "uncached_growth": round(growth, 3) if np.isfinite(growth) else None,
                  "ttft_ms_early": round(ttft["early"], 3),
                  "ttft_ms_late": round(ttft["late"], 3), "ttft_source": ttft["source"],
                  "prefill_rise_ms": round(ttft["prefill_rise_ms"], 3), "prefill_source": ttft["prefill_source"],
                  "saving_basis": "ttft"},
        confidence=0.8 if rates["queried_early"] is not None else 0.5,
        remediations=scored(["stable-prompt-prefix", "kv-cache-memory"], ctx.constraints.scorecard),
        # what restoring the hit rate gives back at least: the prefill time it added (the queueing behind the
        # longer prefills comes on top and is not counted)
        impact_ms=max(ttft["prefill_rise_ms"], 0.0))]


RULE = Rule(
    id=ID, title=TITLE, category="capacity",
    thresholds={
        "min_drop": Threshold(0.10, "fraction", "fall of the hit rate (first third to last): a tenth of all prompt "
                              "tokens that used to come from the cache are computed again"),
        "min_uncached_growth": Threshold(1.25, "ratio", "growth of the tokens each prompt must compute (1 - hit "
                                         "rate): prefill compute is proportional to them, so a quarter more "
                                         "prefill per prompt"),
        "min_ttft_rise": Threshold(1.2, "ratio", "TTFT in the last third over the first: a fifth more, beyond the "
                                   "noise of a median or mean over a third of the window's requests"),
        "min_queried_tokens": Threshold(4096, "tokens", "tokens looked up in each third: prefix hits come in whole "
                                        "blocks (16 tokens by default) per prompt, so a rate over a handful of "
                                        "prompts says whether those repeated, not what the cache holds"),
        "min_scrapes": Threshold(5, "buckets", "hit-rate gauge samples needed in each third (the gauges, unlike "
                                 "the counters, do not say how many tokens they cover)"),
    },
    requires=(Need(metrics=PREFIX_QUERIES + PREFIX_HIT_RATE, what="prefix-cache metrics"),),
    metrics=PREFIX_QUERIES + PREFIX_HITS + PREFIX_HIT_RATE + TTFT + PREFILL,
    doc=__doc__, detect=detect)
