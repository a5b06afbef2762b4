"""The rule registry: every rule is listed here, once, in the order of the bottleneck-triage questions."""
from __future__ import annotations

from ..rule import Rule
from . import (batching_window, budget_overrun, cold_start, concurrency_cap, cost_per_inference, gpu_underutilized,
               io_share, kv_cache_pressure, length_capped, long_prompt_blocking, memory_pressure,
               prefill_decode_interference, prefix_cache_regression, preprocessing_share, queueing_growth, retry_spiral,
               slo_burn, spec_decode_acceptance, tail_segment, throttling)

RULES: tuple[Rule, ...] = (
    preprocessing_share.RULE,
    gpu_underutilized.RULE,
    kv_cache_pressure.RULE,
    concurrency_cap.RULE,
    long_prompt_blocking.RULE,
    prefill_decode_interference.RULE,
    prefix_cache_regression.RULE,
    spec_decode_acceptance.RULE,
    length_capped.RULE,
    queueing_growth.RULE,
    retry_spiral.RULE,
    batching_window.RULE,
    cold_start.RULE,
    io_share.RULE,
    tail_segment.RULE,
    slo_burn.RULE,
    budget_overrun.RULE,
    cost_per_inference.RULE,
    throttling.RULE,
    memory_pressure.RULE,
)

BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def default_thresholds() -> dict[str, dict]:
    return {r.id: {k: t.default for k, t in r.thresholds.items()} for r in RULES}


def threshold_units() -> dict[str, dict[str, str]]:
    """Rule id → threshold → unit: what a triage.toml override is range-checked against."""
    return {r.id: {k: t.unit for k, t in r.thresholds.items()} for r in RULES}
