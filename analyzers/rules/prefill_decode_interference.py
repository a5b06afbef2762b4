"""prefill-decode-interference: decoding sequences slow down while other requests prefill in the same engine.

What: the inter-token latency (ITL) of requests whose decode ran while other requests prefilled, against the ITL
of requests whose decode ran with no prefill beside it, among requests that decoded beside as many other
sequences (a step's time grows with the sequences in it, so only like batches are compared). From the engine
spans (vLLM ``llm_request``): a request's ITL is ``gen_ai.latency.time_in_model_decode`` / (output tokens - 1),
its decode runs from its first token (arrival + ``time_to_first_token``) for that decode time, and another
request's prefill runs for ``time_in_model_prefill`` up to its own first token; a request is "during prefills"
when others' prefills cover at least ``min_prefill_share`` of its decode, "clear" when none does. Without
spans, per scrape interval: the mean ITL (``vllm:inter_token_latency_seconds`` increases of sum over count)
in intervals in which prompt tokens were processed (``vllm:prompt_tokens_total`` rose) against intervals with
none, at no more running sequences (``vllm:num_requests_running``) than the other group saw. Fires when the
median ITL during prefills is ``min_ratio`` times the clear one and ``min_extra_ms`` above it, with
``min_group`` requests (intervals) in each group.
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


def _matched(over: list[dict], clear: list[dict], key: str) -> tuple[list[dict], list[dict]]:
    """Both groups restricted to what the other saw of ``key`` (the decode batch beside them): at most the
    smaller of the two groups' largest."""
    if not over or not clear:
        return over, clear
    cap = min(max(x[key] for x in over), max(x[key] for x in clear))
    return [x for x in over if x[key] <= cap], [x for x in clear if x[key] <= cap]


def _finding(ctx, th, scope, over_itl, clear_itl, n_over, n_clear, source, impact_ms, extra_ev) -> Finding | None:
    m_over, m_clear = float(np.median(over_itl)) * 1e3, float(np.median(clear_itl)) * 1e3
    if m_over - m_clear < th["min_extra_ms"] or m_over < th["min_ratio"] * m_clear:
        return None
    where = f"{scope['route']}: " if scope.get("route") else ""
    return Finding(
        rule=ID, severity="warning", title=TITLE,
        summary=(f"{where}median ITL {m_over:.1f} ms while other requests prefilled against {m_clear:.1f} ms "
                 f"without ({n_over} vs {n_clear} {source}, at like decode batch sizes): prefills in the same "
                 f"engine steps hold back every decoding sequence's next token."),
        scope=scope,
        evidence={"itl_ms_p50_during_prefill": round(m_over, 3), "itl_ms_p50_clear": round(m_clear, 3),
                  "itl_ms_p95_during_prefill": round(float(np.percentile(over_itl, 95)) * 1e3, 3),
                  "itl_ms_p95_clear": round(float(np.percentile(clear_itl, 95)) * 1e3, 3),
                  "during_prefill": n_over, "clear": n_clear, "source": source, **extra_ev},
        confidence=min(1.0, min(n_over, n_clear) / 30),
        remediations=scored(FIXES, ctx.constraints.scorecard),
        impact_ms=max(impact_ms, 0.0))


def _spans(ctx, th, reqs) -> list[Finding]:
    out = []
    rows = from_spans(reqs, th["min_prefill_share"])
    for route in sorted({r["route"] for r in rows}):
        over, clear = _matched([r for r in rows if r["route"] == route and r["group"] == "over"],
                               [r for r in rows if r["route"] == route and r["group"] == "clear"], "beside")
        if len(over) < th["min_group"] or len(clear) < th["min_group"]:
            continue
        itl_clear = float(np.median([r["itl"] for r in clear]))
        # the decode time beyond what the clear ITL gives for the same tokens: what prefills added
        excess = lambda g: float(np.percentile([r["decode"] - (r["tokens"] - 1) * itl_clear for r in g], 95))  # noqa: E731
        f = _finding(ctx, th, {"route": route}, [r["itl"] for r in over], [r["itl"] for r in clear], len(over),
                     len(clear), "requests (engine spans)", (excess(over) - excess(clear)) * 1e3,
                     {"min_prefill_share": th["min_prefill_share"],
                      "decode_batch_beside_max": round(max(r["beside"] for r in over + clear), 3)})
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
    rows = [{"itl": s[i] / c[i], "over": prompt[t] > 0, "running": running.get(t, np.nan)}
            for i, t in enumerate(ts.tolist()) if c[i] >= 1 and t in prompt]
    over, clear = [r for r in rows if r["over"]], [r for r in rows if not r["over"]]
    if rows and all(np.isfinite(r["running"]) for r in rows):  # like batch sizes, where the gauge says them
        over, clear = _matched(over, clear, "running")
    if len(over) < th["min_group"] or len(clear) < th["min_group"]:
        return []
    d_itl = float(np.median([r["itl"] for r in over]) - np.median([r["itl"] for r in clear]))
    gen = next(iter(histogram_quantiles(store, GENERATION_TOKENS, qs=(0.5,)).values()), None)
    tokens = gen["q"].get(0.5) if gen else None
    f = _finding(ctx, th, {}, [r["itl"] for r in over], [r["itl"] for r in clear], len(over), len(clear),
                 f"scrape intervals ({name}, {PROMPT_TOKENS_TOTAL[0]})",
                 d_itl * (tokens - 1) * 1e3 if tokens and tokens > 1 else 0.0,
                 {"median_output_tokens": tokens})
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
        "min_group": Threshold(10, "requests", "requests (or scrape intervals) needed in each group: a median over "
                               "fewer is a few requests' luck"),
    },
    # without spans: the prompt-token counter (and the ITL histogram, whose absence detect reports itself:
    # a histogram is stored as its _bucket/_sum/_count series)
    requires=(Need(stages=("decode",)), Need(metrics=PROMPT_TOKENS_TOTAL, what="prompt-token counter")),
    metrics=ITL + PROMPT_TOKENS_TOTAL + RUNNING + GENERATION_TOKENS,
    doc=__doc__, detect=detect)
