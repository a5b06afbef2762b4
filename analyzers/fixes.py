"""Candidate fixes that findings point to, with their scorecard (impact / feasibility / risk, 1–5).

Scores are weighted with ``[scorecard]`` from triage.toml; the smallest safe change that meets the
constraint should come first, so feasibility and low risk weigh in alongside impact.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fix:
    id: str
    title: str
    impact: int
    feasibility: int
    risk: int
    how: str


CATALOG: dict[str, Fix] = {f.id: f for f in (
    Fix("cache-preprocessing", "Cache preprocessing results for repeated inputs", 4, 4, 2,
        "Memoize tokenization/feature extraction keyed by input hash (LRU sized to the hot set)."),
    Fix("fast-tokenizer", "Use a compiled (Rust/C++) tokenizer or vectorized preprocessing", 4, 3, 2,
        "Replace pure-Python preprocessing with a native implementation; batch it per request group."),
    Fix("move-preprocessing", "Move preprocessing off the request path (ensemble/worker pool)", 4, 2, 3,
        "Run preprocessing in a Triton ensemble or a separate worker pool so it scales independently."),
    Fix("enable-dynamic-batching", "Enable or tune dynamic batching", 4, 4, 2,
        "Set dynamic_batching with preferred_batch_size and a max_queue_delay inside the latency budget."),
    Fix("lower-batch-window", "Lower max_queue_delay_microseconds (or set preferred_batch_size)", 4, 5, 1,
        "A config-only change: wait no longer than one batch's compute time for company that rarely comes."),
    Fix("increase-instances", "Add model instances (instance_group count)", 3, 4, 2,
        "More concurrent executions per GPU raise utilization when kernels are small."),
    Fix("runtime-tuning", "Tune the runtime (TensorRT/ORT execution provider, CUDA graphs, threads)", 3, 3, 3,
        "Use an optimized execution provider and right-size intra/inter-op threads."),
    Fix("quantize-int8", "Quantize the model (INT8) and re-measure", 4, 3, 3,
        "Quantize with calibration; keep it only if accuracy guardrails and measured p95 hold."),
    Fix("autoscale", "Scale out on queue depth / concurrency, not CPU", 4, 3, 2,
        "Autoscale replicas on pending requests or queue time so capacity follows traffic."),
    Fix("admission-control", "Admission control / load shedding at the gateway", 4, 3, 3,
        "Reject early (429) above a concurrency limit instead of queueing past the deadline."),
    Fix("retry-budget", "Retry budget (cap retries to ~10% of requests)", 4, 4, 2,
        "Allow retries only while they are a small fraction of traffic, so overload is not amplified."),
    Fix("backoff-jitter", "Exponential backoff with jitter on retries", 3, 5, 1,
        "Spread retries out so they do not arrive in synchronized waves."),
    Fix("deadline-propagation", "Propagate deadlines; align client timeouts with server latency", 3, 3, 2,
        "Do not retry work the server is still doing; cancel on deadline."),
)}


def score(fix: Fix, weights: dict) -> float:
    wi, wf, wr = (float(weights.get(k, d)) for k, d in (("impact", 0.5), ("feasibility", 0.3), ("risk", 0.2)))
    total = (wi + wf + wr) or 1.0
    return round((wi * fix.impact + wf * fix.feasibility + wr * (6 - fix.risk)) / total, 3)


def scored(fix_ids: list[str], weights: dict) -> list[dict]:
    out = []
    for fid in fix_ids:
        f = CATALOG[fid]
        out.append({"id": f.id, "title": f.title, "impact": f.impact, "feasibility": f.feasibility,
                    "risk": f.risk, "score": score(f, weights), "how": f.how})
    return sorted(out, key=lambda d: -d["score"])
