"""Run the analysis: stages, then every registered rule; order findings most important first."""
from __future__ import annotations

import traceback

from . import latency, stages
from .constraints import Constraints
from .finding import Finding
from .rule import Context
from .rules import RULES


def prepare(store, constraints: Constraints) -> None:
    """Build the derived tables the rules read (stage attribution, requests)."""
    stages.build(store, tuple(constraints.stage_rules) + stages.DEFAULT_RULES)


# (upstream, downstream): when both fire, the downstream one is a symptom of the upstream one.
RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("retry-spiral", "queueing-growth", "retries add load, and the added load is what queues"),
    ("gpu-underutilized", "queueing-growth", "serialized execution on an idle GPU is what queues"),
    ("batching-window", "queueing-growth", "the batcher's timer looks like queueing"),
    ("batching-window", "gpu-underutilized", "batches of one leave the device idle"),
    ("preprocessing-share", "tail-segment", "preprocessing cost grows with the segment's inputs"),
    ("io-share", "tail-segment", "the slow dependency is what the segment waits for"),
    ("cold-start", "tail-segment", "cold requests are what makes the segment slow"),
    ("throttling", "budget-overrun", "a throttled device overruns the inference budget"),
)


def relate(findings: list[Finding]) -> list[Finding]:
    """Mark symptoms of another finding and put the upstream cause first."""
    firing = {f.rule for f in findings if f.evaluated and f.severity != "info"}
    ordered = sorted(findings, key=Finding.sort_key)
    for up, down, why in RELATIONS:
        if up in firing and down in firing:
            for f in ordered:
                if f.rule == down:
                    f.evidence["likely_caused_by"] = {"rule": up, "why": why}
            ups = [f for f in ordered if f.rule == up]
            first_down = min(i for i, f in enumerate(ordered) if f.rule == down)
            if min(i for i, f in enumerate(ordered) if f.rule == up) > first_down:
                rest = [f for f in ordered if f.rule != up]
                ordered = rest[:first_down] + ups + rest[first_down:]
    return ordered


def run_rules(store, constraints: Constraints, rules=RULES) -> list[Finding]:
    ctx = Context(store=store, constraints=constraints, window=latency.window(store))
    findings: list[Finding] = []
    for rule in rules:
        try:
            findings.extend(rule.run(ctx))
        except Exception as exc:  # one broken rule must not hide the others' findings, nor pass a gate
            findings.append(Finding(rule=rule.id, severity="error", title=f"{rule.title}: rule failed",
                                    summary=f"The rule raised {type(exc).__name__}: {exc}",
                                    evidence={"traceback": traceback.format_exc(limit=3)}, evaluated=False))
    return relate(findings)
