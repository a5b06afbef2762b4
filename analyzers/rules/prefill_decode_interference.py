"""prefill-decode-interference: decoding sequences slow down while other requests prefill in the same engine.

What: the inter-token latency (ITL) of requests whose decode ran while other requests prefilled, against the ITL
of requests whose decode ran with no prefill beside it, batch size by batch size (the mean number of other
sequences decoding beside, rounded; a step's time can grow with the sequences in it, so only like batches are
compared, and the per-batch ratios and differences of the medians are averaged). From the engine
spans (vLLM ``llm_request``): a request's ITL is ``gen_ai.latency.time_in_model_decode`` / (output tokens - 1),
its decode runs from its first token (arrival + ``time_to_first_token``) for that decode time, and another
request's prefill runs for ``time_in_model_prefill`` up to its own first token; a request is "during prefills"
when others' prefills cover at least ``min_prefill_share`` of its decode, "clear" when none does. Without
spans, per scrape interval: the mean ITL (``vllm:inter_token_latency_seconds`` increases of sum over count)
in intervals in which prompt tokens were processed (``vllm:prompt_tokens_total`` rose) against intervals with
none, batch by batch of the running gauge (``vllm:num_requests_running``) at the interval's end. Fires when
the ITL during prefills is ``min_ratio`` times the clear one and ``min_extra_ms`` above it, with
``min_group`` requests (intervals) in each group over the batch sizes compared.
Why: vLLM runs prefills and decodes in the same engine steps. A decode step is short (each running sequence
adds one token; the weights are read once for all of them), but a step that also prefills a prompt computes
all of that prompt's tokens (or a chunk of up to ``--max-num-batched-tokens``) before any sequence gets its next
token. Every decoding sequence's next token then waits for the prefill: ITL rises while prompts arrive, and a
stream stutters.
Fix: bound the prefill work per step (a smaller ``--max-num-batched-tokens`` with chunked prefill,
``--long-prefill-token-threshold`` for long prompts), or separate prefill from decode (disaggregated prefill
instances, or a pool for long prompts).
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import GENERATION_TOKENS, ITL, PROMPT_TOKENS_TOTAL, RUNNING

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..metrics import histogram_quantiles
from ..rule import Context, Need, Rule, Threshold

ID = "prefill-decode-interference"
TITLE = "Decodes slow down while other requests prefill"
FIXES = ["separate-prefill", "chunk-long-prefills"]


def _overlap(a0: np.ndarray, a1: np.ndarray, b0: float, b1: float) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)


def from_spans(reqs: list[dict], min_share: float) -> list[dict]:
    """Per request with a decode (2+ output tokens): ``itl`` (s), ``decode`` (s), ``tokens``, ``prefill_share``
    (others' prefill time inside its decode over its decode) and ``beside`` (the mean number of other sequences
    decoding during its decode), and its group: ``over`` (prefill_share >= min_share), ``clear`` (0) or None."""
    use = [r for r in reqs if None not in (r["ttft"], r["prefill"], r["decode"], r["output_tokens"])]
    if not use:
        return []
    # sorted by first token, so each decode window looks only at the requests that can overlap it
    order = np.argsort([r["start_s"] + r["ttft"] for r in use], kind="stable")
    use = [use[k] for k in order]
    first = np.array([r["start_s"] + r["ttft"] for r in use])
    pre0 = first - np.array([r["prefill"] for r in use])
    dec = np.array([r["decode"] for r in use])
    max_pre, max_dec = float((first - pre0).max()), float(dec.max())
    out = []
    for i, r in enumerate(use):
        if r["output_tokens"] < 2 or dec[i] <= 0:
            continue
        d0, d1 = first[i], first[i] + dec[i]
        # others' prefills end at their first token, in (d0, d1 + longest prefill); others' decodes start
        # at theirs, in (d0 - longest decode, d1)
        a, b = np.searchsorted(first, d0, "right"), np.searchsorted(first, d1 + max_pre, "right")
        p = _overlap(pre0[a:b], first[a:b], d0, d1)
        if a <= i < b:
            p[i - a] = 0.0
        a, b = np.searchsorted(first, d0 - max_dec, "left"), np.searchsorted(first, d1, "left")
        o = _overlap(first[a:b], first[a:b] + dec[a:b], d0, d1)
        if a <= i < b:
            o[i - a] = 0.0
        share = float(p.sum()) / dec[i]
        out.append({"route": r["route"], "itl": dec[i] / (r["output_tokens"] - 1), "decode": float(dec[i]),
                    "tokens": r["output_tokens"], "prefill_share": share, "beside": float(o.sum()) / dec[i],
                    "group": "over" if share >= min_share else ("clear" if share == 0 else None)})
    return out


def compare(over: list[dict], clear: list[dict], key: str, min_each: int) -> dict | None:
    """ITL during prefills against clear, batch size by batch size: per rounded ``key`` (the sequences decoding
    beside; the running gauge), the strata with at least ``min_each`` of both groups. Returns the strata's
    requests, each one's clear median ITL (``clear_itl``, s, set on its rows), and the ratio and difference of
    the medians averaged over the strata (weighted by the smaller group), or None without a stratum."""
    strata = []
    for k in sorted({round(x[key]) for x in over} & {round(x[key]) for x in clear}):
        o = [x for x in over if round(x[key]) == k]
        c = [x for x in clear if round(x[key]) == k]
        if len(o) >= min_each and len(c) >= min_each:
            mo, mc = float(np.median([x["itl"] for x in o])), float(np.median([x["itl"] for x in c]))
            for x in o + c:
                x["clear_itl"] = mc
            strata.append((k, o, c, mo, mc, min(len(o), len(c))))
    if not strata:
        return None
    w = np.array([st[5] for st in strata], dtype=float)
    return {"over": [x for st in strata for x in st[1]], "clear": [x for st in strata for x in st[2]],
            "ratio": float(np.exp(np.sum(w * np.log([st[3] / st[4] for st in strata])) / w.sum())),
            "extra_ms": float(np.sum(w * np.array([st[3] - st[4] for st in strata])) / w.sum()) * 1e3,
            "strata": [{"batch": st[0], "during_prefill": len(st[1]), "clear": len(st[2]),
                        "itl_ms_p50_during_prefill": round(st[3] * 1e3, 3), "itl_ms_p50_clear": round(st[4] * 1e3, 3)}
                       for st in strata]}


def _finding(ctx, th, scope, cmp: dict, source: str, impact_ms: float, extra_ev: dict) -> Finding | None:
    n_over, n_clear = len(cmp["over"]), len(cmp["clear"])
    if n_over < th["min_group"] or n_clear < th["min_group"] \
            or cmp["extra_ms"] < th["min_extra_ms"] or cmp["ratio"] < th["min_ratio"]:
        return None
    over_itl = np.array([x["itl"] for x in cmp["over"]]) * 1e3
    clear_itl = np.array([x["itl"] for x in cmp["clear"]]) * 1e3
    where = f"{scope['route']}: " if scope.get("route") else ""
    return Finding(
        rule=ID, severity="warning", title=TITLE,
        summary=(f"{where}ITL while other requests prefilled is {cmp['ratio']:.1f}x (+{cmp['extra_ms']:.1f} ms) the "
                 f"ITL without, at like decode batch sizes ({n_over} vs {n_clear} {source}; medians "
                 f"{np.median(over_itl):.1f} vs {np.median(clear_itl):.1f} ms): prefills in the same engine steps "
                 f"hold back every decoding sequence's next token."),
        scope=scope,
        evidence={"itl_ratio_like_batches": round(cmp["ratio"], 3),
                  "itl_extra_ms_like_batches": round(cmp["extra_ms"], 3),
                  "itl_ms_p50_during_prefill": round(float(np.median(over_itl)), 3),
                  "itl_ms_p50_clear": round(float(np.median(clear_itl)), 3),
                  "itl_ms_p95_during_prefill": round(float(np.percentile(over_itl, 95)), 3),
                  "itl_ms_p95_clear": round(float(np.percentile(clear_itl, 95)), 3),
                  "during_prefill": n_over, "clear": n_clear, "by_batch": cmp["strata"], "source": source, **extra_ev},
        confidence=min(1.0, min(n_over, n_clear) / 30),
        remediations=scored(FIXES, ctx.constraints.scorecard),
        impact_ms=max(impact_ms, 0.0))


def _excess_p95(group: list[dict]) -> float:
    """p95 over ``group`` of the decode time beyond what its batch's clear ITL gives for the same tokens (s):
    what prefills added to it."""
    return float(np.percentile([r["decode"] - (r["tokens"] - 1) * r["clear_itl"] for r in group], 95))


def _spans(ctx, th, reqs) -> list[Finding]:
    out = []
    rows = from_spans(reqs, th["min_prefill_share"])
    for route in sorted({r["route"] for r in rows}):
        cmp = compare([r for r in rows if r["route"] == route and r["group"] == "over"],
                      [r for r in rows if r["route"] == route and r["group"] == "clear"], "beside", th["min_per_batch"])
        if cmp is None:
            continue
        f = _finding(ctx, th, {"route": route}, cmp, "requests (engine spans)",
                     (_excess_p95(cmp["over"]) - _excess_p95(cmp["clear"])) * 1e3,
                     {"min_prefill_share": th["min_prefill_share"]})
        if f:
            out.append(f)
    return out


def _metrics(ctx, th) -> list[Finding]:
    store = ctx.store
    name, ts, s, c = sig.histogram_steps(store, ITL)
    pts, ptok = sig.counter_steps(store, PROMPT_TOKENS_TOTAL)
    if name is None or not len(pts):
        return [not_evaluated(ID, TITLE, "no engine spans with prefill/decode times, and no ITL histogram and "
                                         "prompt-token counter over two or more scrapes")]
    prompt = dict(zip(pts.tolist(), ptok.tolist()))
    running = sig.gauge(store, RUNNING)
    # the running gauge at the interval's end stands for its batch; without it, all intervals are one batch
    rows = [{"itl": s[i] / c[i], "over": prompt[t] > 0, "running": running.get(t, 0.0) if running else 0.0}
            for i, t in enumerate(ts.tolist()) if c[i] >= 1 and t in prompt]
    cmp = compare([r for r in rows if r["over"]], [r for r in rows if not r["over"]], "running", th["min_per_batch"])
    if cmp is None:
        return []
    gen = next(iter(histogram_quantiles(store, GENERATION_TOKENS, qs=(0.5,)).values()), None)
    tokens = gen["q"].get(0.5) if gen else None
    f = _finding(ctx, th, {}, cmp, f"scrape intervals ({name}, {PROMPT_TOKENS_TOTAL[0]})",
                 cmp["extra_ms"] * (tokens - 1) if tokens and tokens > 1 else 0.0,
                 {"median_output_tokens": tokens, "batch_source": RUNNING[0] if running else "none"})
    return [f] if f else []


def detect(ctx: Context, th: dict) -> list[Finding]:
    reqs = sig.engine_requests(ctx.store)
    if any(None not in (r["prefill"], r["decode"], r["output_tokens"]) for r in reqs):
        return _spans(ctx, th, reqs)
    return _metrics(ctx, th)


RULE = Rule(
    id=ID, title=TITLE, category="tail",
    thresholds={
        "min_ratio": Threshold(1.5, "ratio", "median ITL during prefills over the clear one: a decode step costs "
                               "about the same whatever the batch (weights are read once per step) and the groups "
                               "are matched on batch size, so half a step more per token is prefill work in the "
                               "steps"),
        "min_extra_ms": Threshold(1.0, "ms", "median ITL difference below which it is step-scheduling and "
                                  "detokenization jitter"),
        "min_prefill_share": Threshold(0.05, "fraction", "others' prefill time inside a request's decode from which "
                                       "it decoded during prefills: one prefill step of a prompt among ~20 decode "
                                       "steps"),
        "min_group": Threshold(10, "requests", "requests (or scrape intervals) needed in each group, over the "
                               "batch sizes compared: a median over fewer is a few requests' luck"),
        "min_per_batch": Threshold(3, "requests", "requests (or intervals) of each group at one batch size for it "
                                   "to be compared: the median of fewer is one request"),
    },
    # without spans: the prompt-token counter (and the ITL histogram, whose absence detect reports itself:
    # a histogram is stored as its _bucket/_sum/_count series)
    requires=(Need(stages=("decode",)), Need(metrics=PROMPT_TOKENS_TOTAL, what="prompt-token counter")),
    metrics=ITL + PROMPT_TOKENS_TOTAL + RUNNING + GENERATION_TOKENS,
    doc=__doc__, detect=detect)
