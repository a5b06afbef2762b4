"""length-capped: many LLM requests end because they hit ``max_tokens``, not because the answer was complete.

What: the share of requests whose finish reason is ``length`` (``gen_ai.response.finish_reasons`` on any span
of the trace, e.g. the gateway's client span) or, where no reason is recorded, whose output tokens reached
``gen_ai.request.max_tokens``; without spans, ``vllm:request_success_total{finished_reason="length"}`` over
all finished requests in the window.
Why: a request cut at ``max_tokens`` decodes exactly that many tokens, so its latency is set by the cap
(max_tokens x ITL), and its answer is truncated: clients often retry or continue it, which doubles the work.
A benchmark with ``ignore_eos`` looks the same on purpose. It is reported at info level: it is about what the
answers are, not a latency cause on its own; the decode stage and ITL say what it costs.
Fix: raise ``max_tokens`` where answers are truncated (or stop the prompt asking for more than the cap), or
lower it deliberately where long answers are not wanted, and say so to clients.
"""
from __future__ import annotations

from triage.collectors.metric_catalogue import REQUEST_SUCCESS

from .. import llm_signals as sig
from ..finding import Finding
from ..fixes import scored
from ..metrics import counter_increase, series
from ..rule import Context, Need, Rule, Threshold

ID = "length-capped"
TITLE = "LLM answers cut at max_tokens"


def _capped(r: dict) -> bool | None:
    if r["finish"]:
        return "length" in r["finish"]
    if r["output_tokens"] is not None and r["max_tokens"]:
        return r["output_tokens"] >= r["max_tokens"]
    return None


def detect(ctx: Context, th: dict) -> list[Finding]:
    reqs = sig.engine_requests(ctx.store)
    out = []
    for route in sorted({r["route"] for r in reqs}):
        known = [c for c in (_capped(r) for r in reqs if r["route"] == route) if c is not None]
        if len(known) < th["min_requests"]:
            continue
        n = sum(known)
        share = n / len(known)
        if share < th["min_share"]:
            continue
        out.append(_finding(ctx, th, route, n, len(known), share, "spans (gen_ai.response.finish_reasons, "
                                                              "gen_ai.usage output tokens vs gen_ai.request.max_tokens)"))
    if reqs:
        return out
    by_reason: dict[str, float] = {}
    for s in series(ctx.store, REQUEST_SUCCESS):
        by_reason[s.labels.get("finished_reason", "")] = by_reason.get(s.labels.get("finished_reason", ""), 0.0) \
            + float(counter_increase(s)[1].sum())
    total = sum(by_reason.values())
    if total >= th["min_requests"] and by_reason.get("length", 0.0) / total >= th["min_share"]:
        out.append(_finding(ctx, th, None, int(by_reason["length"]), int(total), by_reason["length"] / total,
                            "vllm:request_success_total{finished_reason}"))
    return out


def _finding(ctx, th, route, n, total, share, source) -> Finding:
    return Finding(
        rule=ID, severity="info", title=TITLE,
        summary=(f"{route + ': ' if route else ''}{n} of {total} requests ({share:.0%}) finished by length: their "
                 f"answers stop at max_tokens and their decode time is set by it."),
        scope={"route": route} if route else {},
        evidence={"length_finished": n, "requests_with_reason": total, "share": round(share, 4), "source": source},
        confidence=min(1.0, total / (4 * th["min_requests"])),  # a share over 4x the minimum is firm remediations=scored(["raise-max-tokens"], ctx.constraints.scorecard),
        impact_ms=0.0)


RULE = Rule(
    id=ID, title=TITLE, category="llm",
    thresholds={
        "min_share": Threshold(0.3, "fraction", "share of requests ending at max_tokens from which the cap, not a "
                               "few long answers, is what ends them"),
        "min_requests": Threshold(20, "requests", "requests with a known finish needed to judge a share"),
    },
    severity_from="rule",  # about the answers, not a latency saving: info
    requires=(Need(stages=("decode",)), Need(metrics=REQUEST_SUCCESS, what="finished-request metrics")),
    metrics=REQUEST_SUCCESS,
    doc=__doc__, detect=detect)
