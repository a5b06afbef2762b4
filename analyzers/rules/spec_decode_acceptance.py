"""spec-decode-acceptance: speculative decoding's drafts are mostly rejected, so the work spent on them is wasted.

What: the acceptance rate of speculative decoding over the window, draft tokens accepted by the target model over
draft tokens proposed (``vllm:spec_decode_num_accepted_tokens`` / ``vllm:spec_decode_num_draft_tokens``
counters; else the acceptance-rate gauges, vLLM V0's ``vllm:spec_decode_draft_acceptance_rate`` and SGLang's
``sglang:spec_accept_rate``), below ``min_acceptance`` with enough draft tokens to measure it. With
``vllm:spec_decode_num_drafts`` it also gives the mean acceptance length (tokens emitted per verification
step: 1 + accepted / drafts) and the draft length (draft tokens / drafts).
Why: each step, a draft model (or n-gram lookup, EAGLE/Medusa heads) proposes k tokens per sequence and the target
model verifies all k in one forward pass; the accepted prefix and one token of the target's are kept, the rest
are thrown away. The target computes every drafted position, and those positions count against the step's token
budget (``--max-num-batched-tokens``) like any other sequence's. Below an acceptance rate of one half, more of
the verified positions are discarded than kept: the draft does not predict this traffic, and the step carries
more wasted compute than it gains tokens, which under load crowds out other sequences and lengthens ITL.
Fix: lower the number of speculative tokens (``num_speculative_tokens`` in ``--speculative-config``), use a
draft that matches the target and the traffic (a draft of the same family, EAGLE heads trained for the
target; n-gram lookup only where outputs copy the prompt), or turn speculative decoding off for this workload
(or at high batch sizes, where decode is no longer memory-bound and verification competes for compute).
Severity is the rule's own (warning): metrics give the wasted drafts, not what they cost in latency.
"""
from __future__ import annotations

import numpy as np

from triage.collectors.metric_catalogue import SPEC_ACCEPT_RATE, SPEC_ACCEPTED_TOKENS, SPEC_DRAFT_TOKENS, SPEC_DRAFTS

from .. import llm_signals as sig
from ..finding import Finding, not_evaluated
from ..fixes import scored
from ..rule import Context, Need, Rule, Threshold

ID = "spec-decode-acceptance"
TITLE = "Speculative decoding: most draft tokens rejected"


def _from_counters(store) -> dict | None:
    """Accepted and drafted tokens (and drafts) during the window; None without the draft-token counter. A
    single scrape counts from the server's start."""
    totals = {}
    for key, names in (("drafted", SPEC_DRAFT_TOKENS), ("accepted", SPEC_ACCEPTED_TOKENS), ("drafts", SPEC_DRAFTS)):
        _, inc = sig.counter_steps(store, names)
        single = sig.gauge(store, names) if not len(inc) else {}
        totals[key] = float(inc.sum()) if len(inc) else (float(sum(single.values())) if len(single) == 1 else None)
    return totals if totals["drafted"] is not None and totals["accepted"] is not None else None


def detect(ctx: Context, th: dict) -> list[Finding]:
    store = ctx.store
    c = _from_counters(store)
    if c is not None:
        if c["drafted"] < th["min_draft_tokens"]:
            return [not_evaluated(ID, TITLE, f"{c['drafted']:.0f} draft tokens in the window, fewer than "
                                             f"{th['min_draft_tokens']:.0f}")]
        rate = c["accepted"] / c["drafted"]
        ev = {"source": "counters (accepted / draft tokens)", "draft_tokens": c["drafted"],
              "accepted_tokens": c["accepted"], "wasted_tokens": c["drafted"] - c["accepted"]}
        if c["drafts"]:
            ev |= {"drafts": c["drafts"], "mean_acceptance_length": round(1 + c["accepted"] / c["drafts"], 3),
                   "draft_length": round(c["drafted"] / c["drafts"], 3)}
    else:
        name = next((n for n in SPEC_ACCEPT_RATE if sig.gauge(store, [n])), None)
        if name is None:
            return [not_evaluated(ID, TITLE, "no speculative-decoding draft/accepted token samples")]
        v = np.array(list(sig.gauge(store, [name], "max").values()))
        if len(v) < th["min_scrapes"]:
            return [not_evaluated(ID, TITLE, f"{len(v)} {name} samples, fewer than {th['min_scrapes']:.0f}")]
        rate = float(np.median(v))
        ev = {"source": f"gauge {name} (median over {len(v)} scrapes)"}
    if rate >= th["min_acceptance"]:
        return []
    extra = (f", {ev['mean_acceptance_length']:.2f} tokens per verification step from drafts of "
             f"{ev['draft_length']:.1f}" if "drafts" in ev else "")
    wasted = f" ({ev['wasted_tokens']:.0f} of {ev['draft_tokens']:.0f} draft tokens thrown away)" \
        if "wasted_tokens" in ev else ""
    return [Finding(
        rule=ID, severity="warning", title=TITLE,
        summary=(f"speculative decoding accepts {rate:.0%} of its draft tokens{wasted}{extra}: the target model "
                 f"verifies more drafted positions than it keeps."),
        evidence={**ev, "acceptance_rate": round(rate, 4), "min_acceptance": th["min_acceptance"]},
        confidence=0.9 if "draft_tokens" in ev else 0.6,
        remediations=scored(["tune-speculative-decoding"], ctx.constraints.scorecard),
        impact_ms=0.0)]


RULE = Rule(
    id=ID, title=TITLE, category="capacity",
    thresholds={
        "min_acceptance": Threshold(0.5, "fraction", "draft tokens accepted over proposed: below one half the "
                                    "target verifies (and the step budget carries) more rejected positions than "
                                    "accepted ones"),
        "min_draft_tokens": Threshold(1000, "tokens", "draft tokens needed in the window: over 1,000 the standard "
                                      "error of a rate near one half is under 0.02, so a rate well below the "
                                      "threshold is not noise (tokens of one draft are correlated: fewer would "
                                      "not do)"),
        "min_scrapes": Threshold(5, "buckets", "acceptance-rate gauge samples needed (a gauge does not say how "
                                 "many tokens it covers)"),
    },
    severity_from="rule",  # the waste is measured; its latency cost is not (see the doc)
    requires=(Need(metrics=SPEC_DRAFT_TOKENS + SPEC_ACCEPT_RATE, what="speculative-decoding metrics"),),
    metrics=SPEC_DRAFT_TOKENS + SPEC_ACCEPTED_TOKENS + SPEC_DRAFTS + SPEC_ACCEPT_RATE,
    doc=__doc__, detect=detect)
