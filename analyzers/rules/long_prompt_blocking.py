"""long-prompt-blocking: short prompts wait behind long prefills (head-of-line blocking in the LLM engine).

What: from the engine spans (vLLM ``llm_request``: arrival, ``gen_ai.latency.time_to_first_token``,
``time_in_queue``, ``time_in_model_prefill``, ``gen_ai.usage.prompt_tokens``), short prompts (at most the
median prompt) are split by whether a long prompt's prefill (``long_prompt_ratio`` x the median or more) ran
between their arrival and their first token. Fires when the overlapped group's head-of-line wait
(TTFT - queue - prefill) is well above the clear group's, with enough requests in each.
Why: the engine admits new requests only between steps, and a step that prefills a long prompt in one piece
takes as long as that whole prefill. A short request arriving meanwhile is not in the scheduler's queue yet
(its ``time_in_queue`` is about 0): its wait shows as TTFT - queue - prefill. Decodes of running requests
stall the same way.
Fix: chunk long prefills: ``--long-prefill-token-threshold`` (a long prompt prefills at most that many tokens
per step, so short prompts and decodes interleave with it) and a smaller ``--max-num-batched-tokens``; or serve
long prompts from their own pool.
"""
from __future__ import annotations

import numpy as np

from .. import llm_signals as sig
from ..finding import Finding
from ..fixes import scored
from ..rule import Context, Need, Rule, Threshold

ID = "long-prompt-blocking"
TITLE = "Short prompts wait behind long prefills"


def split(reqs: list[dict], ratio: float) -> tuple[list[tuple[dict, float]], list[tuple[dict, float]], float] | None:
    """(overlapped shorts, clear shorts, median prompt tokens); each short with its head-of-line wait (s)."""
    usable = [r for r in reqs if r["prompt_tokens"] is not None and r["prefill"] is not None]
    if not usable:
        return None
    med = float(np.median([r["prompt_tokens"] for r in usable]))
    longs = [(r["start_s"] + r["ttft"] - r["prefill"], r["start_s"] + r["ttft"]) for r in usable
             if r["prompt_tokens"] >= ratio * med]
    over, clear = [], []
    for r in usable:
        if r["prompt_tokens"] > med:
            continue
        a, b = r["start_s"], r["start_s"] + r["ttft"]
        wait = max(r["ttft"] - (r["queue"] or 0.0) - r["prefill"], 0.0)
        hit = any(la < b and lb > a and (la, lb) != (b - r["prefill"], b) for la, lb in longs)
        (over if hit else clear).append((r, wait))
    return over, clear, med


def detect(ctx: Context, th: dict) -> list[Finding]:
    reqs = sig.engine_requests(ctx.store)
    out = []
    for route in sorted({r["route"] for r in reqs}):
        got = split([r for r in reqs if r["route"] == route], th["long_prompt_ratio"])
        if got is None:
            continue
        over, clear, med = got
        if len(over) < th["min_group"] or len(clear) < th["min_group"]:
            continue
        w_over = np.array([w for _, w in over]) * 1e3
        w_clear = np.array([w for _, w in clear]) * 1e3
        m_over, m_clear = float(np.median(w_over)), float(np.median(w_clear))
        p_over, p_clear = float(np.percentile(w_over, 95)), float(np.percentile(w_clear, 95))
        if m_over - m_clear < th["min_extra_ms"] or m_over < th["min_ratio"] * m_clear:
            continue
        ttft_over = float(np.percentile([r["ttft"] for r, _ in over], 95)) * 1e3
        ttft_clear = float(np.percentile([r["ttft"] for r, _ in clear], 95)) * 1e3
        out.append(Finding(
            rule=ID, severity="warning", title=TITLE,
            summary=(f"{route}: short prompts (≤ {med:.0f} tokens) whose first token came while a long prompt "
                     f"(≥ {th['long_prompt_ratio'] * med:.0f} tokens) prefilled waited {m_over:.1f} ms median "
                     f"outside the queue and prefill (p95 {p_over:.1f}), against {m_clear:.1f} ms (p95 {p_clear:.1f}) "
                     f"for the others ({len(over)} vs {len(clear)} requests); their TTFT p95 {ttft_over:.0f} vs "
                     f"{ttft_clear:.0f} ms."),
            scope={"route": route},
            evidence={"median_prompt_tokens": med, "short_overlapped": len(over), "short_clear": len(clear),
                      "hol_wait_ms_p50_overlapped": round(m_over, 3), "hol_wait_ms_p50_clear": round(m_clear, 3),
                      "hol_wait_ms_p95_overlapped": round(p_over, 3), "hol_wait_ms_p95_clear": round(p_clear, 3),
                      "ttft_p95_ms_overlapped": round(ttft_over, 3), "ttft_p95_ms_clear": round(ttft_clear, 3),
                      "saving_basis": "ttft"},
            confidence=min(1.0, min(len(over), len(clear)) / 30),
            remediations=scored(["chunk-long-prefills", "isolate-segment"], ctx.constraints.scorecard),
            # the head-of-line wait the short prompts' tail carries beyond what clear ones see
            impact_ms=max(p_over - p_clear, 0.0)))
    return out


RULE = Rule(
    id=ID, title=TITLE, category="tail",
    thresholds={
        "long_prompt_ratio": Threshold(4.0, "ratio", "a prompt this many times the median is long: its one-step "
                                       "prefill (compute grows at least linearly with tokens) takes several short "
                                       "prefills' time"),
        "min_ratio": Threshold(2.0, "ratio", "overlapped shorts' median head-of-line wait over the clear shorts'"),
        "min_extra_ms": Threshold(5.0, "ms", "extra head-of-line wait (median) below which blocking is noise "
                                  "(a scheduler step on a busy engine is a few ms)"),
        "min_group": Threshold(5, "requests", "short requests needed in each group"),
    },
    requires=(Need(stages=("prefill",)),),
    doc=__doc__, detect=detect)
