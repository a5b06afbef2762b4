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
    Fix("cache-remote-lookups", "Cache or prefetch remote lookups (features, embeddings)", 4, 4, 2,
        "Serve hot keys from a local cache with a TTL; prefetch what the next stage needs."),
    Fix("batch-remote-calls", "Batch remote calls (one multi-get instead of N gets)", 3, 3, 2,
        "Collapse per-item lookups into one batched request per inference request."),
    Fix("hedge-slow-calls", "Hedge or time-bound slow dependency calls", 3, 3, 3,
        "Send a second request after the dependency's p95, or fall back to defaults past a deadline."),
    Fix("isolate-segment", "Serve the slow segment from its own pool or queue", 4, 2, 3,
        "Keep long inputs (or the slow model) from sharing a queue with the fast majority."),
    Fix("cap-or-chunk-inputs", "Cap or chunk oversized inputs", 3, 3, 3,
        "Truncate, chunk or summarise inputs above a size limit; document the limit."),
    Fix("right-size-stage", "Bring the stage back inside its budget (or renegotiate the budget)", 3, 3, 2,
        "The stage's owner fixes its p95, or the budget split is changed on purpose, in triage.toml."),
    Fix("shed-load-on-burn", "Protect the error budget: shed or degrade load while burning", 4, 3, 3,
        "Admission control and graceful degradation while the burn rate is above 1."),
    Fix("warm-up-instances", "Warm up model instances before they take traffic", 4, 4, 1,
        "Run warm-up requests at load (Triton model_warmup) and keep a minimum of warm replicas."),
    Fix("reduce-memory", "Reduce GPU memory: smaller batch/KV cache, quantize, or more memory", 3, 3, 3,
        "Lower max batch or KV cache size, quantize weights, or move to a larger device."),
    Fix("fix-cooling-power", "Fix the clock throttling cause (cooling, power cap)", 3, 2, 2,
        "Check thermals and power limits; move load off throttled devices."),
    Fix("consolidate-replicas", "Consolidate: fewer, busier accelerators (bin-pack, batch)", 4, 3, 3,
        "Raise utilization per device with batching and co-location, then scale down."),
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
    Fix("kv-cache-memory", "Give the LLM engine's KV cache more room", 4, 4, 2,
        "Raise --gpu-memory-utilization, lower --max-model-len, use --kv-cache-dtype fp8, or add "
        "tensor-parallel GPUs: more KV blocks admit more sequences without preemption."),
    Fix("lower-max-num-seqs", "Lower --max-num-seqs so admitted sequences keep their KV blocks", 3, 5, 2,
        "Fewer concurrent sequences per engine: fewer preemptions and recomputation; scale out for throughput."),
    Fix("raise-max-num-seqs", "Raise --max-num-seqs (the scheduler's cap on running sequences)", 4, 5, 2,
        "While KV blocks are free, let the scheduler run more sequences per step; watch KV usage and ITL."),
    Fix("chunk-long-prefills", "Chunk long prefills (--long-prefill-token-threshold, --max-num-batched-tokens)", 4, 4, 2,
        "Cap the tokens one prompt may prefill per step so short prompts and decodes interleave with it."),
    Fix("stable-prompt-prefix", "Keep the shared prompt prefix identical and first; route by prefix", 4, 4, 1,
        "Put the system prompt/template first and byte-identical (no timestamps or ids in it), variable parts "
        "after it, and send requests with the same prefix to the same replica so its cached KV blocks are hit."),
    Fix("tune-speculative-decoding", "Tune or disable speculative decoding", 3, 4, 2,
        "Fewer num_speculative_tokens, a draft matched to the target and the traffic, or no speculation for "
        "this workload; re-measure ITL and throughput."),
    Fix("separate-prefill", "Keep prefills from stalling decodes (chunked prefill, disaggregated prefill)", 4, 3, 3,
        "Cap the prefill tokens per step (--max-num-batched-tokens, --long-prefill-token-threshold) so each "
        "decode step stays short, or run prefill on separate instances (prefill/decode disaggregation)."),
    Fix("raise-max-tokens", "Raise max_tokens (or stop relying on the length cap)", 3, 4, 2,
        "Requests cut off at max_tokens return truncated answers; clients often retry or continue them."),
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
