"""The rule registry: every rule is listed here, once, in the order of the bottleneck-triage questions."""
from __future__ import annotations

from ..rule import Rule
from . import batching_window, gpu_underutilized, preprocessing_share, queueing_growth, retry_spiral

RULES: tuple[Rule, ...] = (
    preprocessing_share.RULE,
    gpu_underutilized.RULE,
    queueing_growth.RULE,
    retry_spiral.RULE,
    batching_window.RULE,
)

BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def default_thresholds() -> dict[str, dict]:
    return {r.id: {k: t.default for k, t in r.thresholds.items()} for r in RULES}
