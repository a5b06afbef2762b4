"""The one metric catalogue: every metric name triage knows, with its kind, unit, meaning, the other names the
same quantity has had (aliases: other exporters, older versions) and how live mode asks Prometheus for it.

Names are grouped in families, one per quantity, current names first (DESIGN.md §9). vLLM V1 renamed
gpu_cache_usage_perc -> kv_cache_usage_perc, gpu_prefix_cache_* -> prefix_cache_*, time_per_output_token_seconds
-> inter_token_latency_seconds; DCGM renamed CLOCK_THROTTLE_REASONS -> CLOCKS_EVENT_REASONS. The OpenTelemetry
GenAI metrics appear under their dotted names (OTLP) or as Prometheus translates them (dots to underscores, unit
appended).

Readers (the rules, the report) declare the names they read from here; live mode (``collectors.prometheus``)
queries exactly what they declare (``live_queries``), so a name a rule reads cannot be missing there.
Gauges and counters are queried with the aggregation pushed down to the server (``{m}`` is the name);
histograms (base names: the store holds ``<name>_bucket{le}``, ``_sum``, ``_count``) as per-model
``histogram_quantile`` series over a 1-minute rate, stored as ``<name>:p50|p95|p99``.
"""
from __future__ import annotations

from dataclasses import dataclass

GAUGE, COUNTER, HISTOGRAM, INFO = "gauge", "counter", "histogram", "info"


@dataclass(frozen=True)
class Metric:
    name: str
    family: str           # the quantity; every name of one family is an alias of the others
    kind: str             # gauge | counter | histogram | info (a gauge whose labels carry the facts)
    unit: str
    meaning: str
    promql: str = ""      # gauge/counter/info: PromQL with the aggregation pushed down, {m} the name
    by: str = ""          # histogram: the label naming the model, "" for none
    quantiles: tuple[float, ...] = (0.95,)  # histogram: the quantile series live mode asks for

    def queries(self) -> list[tuple[str, str]]:
        """(stored metric name, PromQL) that live mode runs for this metric."""
        if self.kind != HISTOGRAM:
            return [(self.name, self.promql.format(m=self.name))]
        labels = f"le, {self.by}" if self.by else "le"
        return [(f"{self.name}:p{round(q * 100)}",
                 f"histogram_quantile({q}, sum by ({labels}) (rate({self.name}_bucket[1m])))")
                for q in self.quantiles]

    @property
    def series_name(self) -> str:
        """The series whose presence on the server makes the metric queryable."""
        return f"{self.name}_bucket" if self.kind == HISTOGRAM else self.name


CATALOGUE: dict[str, Metric] = {}


def _family(family: str, kind: str, meaning: str, *entries, by: str = "", quantiles=(0.95,)) -> tuple[str, ...]:
    """Register one quantity's names; each entry is (name, unit, promql) for gauges and counters, (name, unit,
    model label) for histograms. Returns the names, current first."""
    for name, unit, how in entries:
        assert name not in CATALOGUE, name
        CATALOGUE[name] = Metric(name, family, kind, unit, meaning,
                                 promql=how if kind != HISTOGRAM else "", by=how if kind == HISTOGRAM else by,
                                 quantiles=quantiles)
    return tuple(name for name, _, _ in entries)


SUM_BY_MODEL = "sum by (model, version) ({m})"
AVG_BY_GPU = "avg by (gpu, UUID, Hostname, modelName) ({m})"
SUM_BY_NAME = "sum by (model_name) ({m})"
AVG_BY_NAME = "avg by (model_name) ({m})"

# Triton (cumulative counters per model, GPU gauges per device)
TRITON_SUCCESS = _family("triton_success", COUNTER, "requests that succeeded",
                         ("nv_inference_request_success", "requests", SUM_BY_MODEL))
TRITON_FAILURE = _family("triton_failure", COUNTER, "requests that failed, by reason",
                         ("nv_inference_request_failure", "requests", "sum by (model, version, reason) ({m})"))
TRITON_INFERENCES = _family("triton_inferences", COUNTER, "inferences performed (a batch of n counts n)",
                            ("nv_inference_count", "inferences", SUM_BY_MODEL))
TRITON_EXECUTIONS = _family("triton_executions", COUNTER, "model executions (a batch counts once)",
                            ("nv_inference_exec_count", "executions", SUM_BY_MODEL))
TRITON_REQUEST_TIME = _family("triton_request_time", COUNTER, "cumulative end-to-end request time in the server",
                              ("nv_inference_request_duration_us", "µs", SUM_BY_MODEL))
TRITON_QUEUE_TIME = _family("triton_queue_time", COUNTER, "cumulative time requests waited in the scheduler queue",
                            ("nv_inference_queue_duration_us", "µs", SUM_BY_MODEL))
TRITON_COMPUTE_TIME = _family(
    "triton_compute_time", COUNTER, "cumulative compute time: input copy, inference, output copy",
    ("nv_inference_compute_input_duration_us", "µs", SUM_BY_MODEL),
    ("nv_inference_compute_infer_duration_us", "µs", SUM_BY_MODEL),
    ("nv_inference_compute_output_duration_us", "µs", SUM_BY_MODEL))
TRITON_GPU_MEMORY_TOTAL = _family("gpu_memory_total", GAUGE, "GPU memory on the device",
                                  ("nv_gpu_memory_total_bytes", "bytes", "sum by (gpu_uuid) ({m})"))
TRITON_CPU = _family("cpu_utilization", GAUGE, "host CPU busy", ("nv_cpu_utilization", "fraction", "avg({m})"))

# accelerator utilization, memory, temperature and clocks (DCGM; Triton's own GPU gauges)
GPU_UTILIZATION = _family("gpu_utilization", GAUGE, "accelerator busy",
                          ("DCGM_FI_DEV_GPU_UTIL", "percent", AVG_BY_GPU),
                          ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "fraction", AVG_BY_GPU),
                          ("nv_gpu_utilization", "fraction", "avg by (gpu_uuid) ({m})"))
GPU_MEMORY_USED = _family("gpu_memory_used", GAUGE, "GPU memory in use",
                          ("DCGM_FI_DEV_FB_USED", "MiB", AVG_BY_GPU),
                          ("nv_gpu_memory_used_bytes", "bytes", "sum by (gpu_uuid) ({m})"))
GPU_MEMORY_FREE = _family("gpu_memory_free", GAUGE, "GPU memory free", ("DCGM_FI_DEV_FB_FREE", "MiB", AVG_BY_GPU))
GPU_TEMPERATURE = _family("gpu_temperature", GAUGE, "GPU temperature", ("DCGM_FI_DEV_GPU_TEMP", "°C", AVG_BY_GPU))
CLOCK_REASONS = _family("clock_event_reasons", GAUGE, "bit mask of why the clocks are held down",
                        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "bitmask", AVG_BY_GPU),
                        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "bitmask", AVG_BY_GPU))

# LLM engines' scheduler gauges (vLLM, SGLang, TGI)
WAITING = _family("waiting", GAUGE, "requests waiting in the engine's scheduler queue",
                  ("vllm:num_requests_waiting", "requests", SUM_BY_NAME),
                  ("sglang:num_queue_reqs", "requests", SUM_BY_NAME),
                  ("tgi_queue_size", "requests", "sum({m})"))
RUNNING = _family("running", GAUGE, "requests the engine is running (in the batch)",
                  ("vllm:num_requests_running", "requests", SUM_BY_NAME),
                  ("sglang:num_running_reqs", "requests", SUM_BY_NAME),
                  ("tgi_batch_current_size", "requests", "sum({m})"))
KV_USAGE = _family("kv_usage", GAUGE, "share of the KV cache in use",
                   ("vllm:kv_cache_usage_perc", "fraction", AVG_BY_NAME),
                   ("vllm:gpu_cache_usage_perc", "fraction", AVG_BY_NAME),
                   ("sglang:token_usage", "fraction", AVG_BY_NAME))
WAITING_BY_REASON = _family("waiting_by_reason", GAUGE, "requests waiting, by reason (capacity, deferred)",
                            ("vllm:num_requests_waiting_by_reason", "requests", "sum by (model_name, reason) ({m})"))
PREFIX_HIT_RATE = _family("prefix_hit_rate", GAUGE, "prefix cache hit rate",
                          ("sglang:cache_hit_rate", "fraction", AVG_BY_NAME),
                          ("vllm:gpu_prefix_cache_hit_rate", "fraction", AVG_BY_NAME))
SPEC_ACCEPT_RATE = _family("spec_accept_rate", GAUGE, "speculative decoding acceptance rate",
                           ("sglang:spec_accept_rate", "fraction", AVG_BY_NAME),
                           ("vllm:spec_decode_draft_acceptance_rate", "fraction", AVG_BY_NAME))
BATCH_MAX_TOKENS = _family("batch_max_tokens", GAUGE, "tokens the current batch may hold",
                           ("tgi_batch_current_max_tokens", "tokens", "sum({m})"))
CACHE_CONFIG = _family("cache_config", INFO, "the KV cache's configuration in labels (block_size, num_gpu_blocks)",
                       ("vllm:cache_config_info", "1", "max by (block_size, num_gpu_blocks) ({m})"))
TRITON_PENDING = _family("triton_pending", GAUGE, "requests received but not yet executed",
                         ("nv_inference_pending_request_count", "requests", SUM_BY_MODEL))
# requests pending in any server: Triton, vLLM, TGI, SGLang (the order "not evaluated" names them in)
PENDING = TRITON_PENDING + (WAITING[0], WAITING[2], WAITING[1])

# LLM engines' counters
PREEMPTIONS = _family("preemptions", COUNTER, "running sequences evicted for lack of KV blocks",
                      ("vllm:num_preemptions_total", "requests", SUM_BY_NAME),
                      ("vllm:num_preemptions", "requests", SUM_BY_NAME),
                      ("sglang:num_retracted_reqs", "requests", SUM_BY_NAME))
PREFIX_QUERIES = _family("prefix_queries", COUNTER, "tokens looked up in the prefix cache",
                         ("vllm:prefix_cache_queries_total", "tokens", SUM_BY_NAME),
                         ("vllm:gpu_prefix_cache_queries_total", "tokens", SUM_BY_NAME),
                         ("vllm:gpu_prefix_cache_queries", "tokens", SUM_BY_NAME))
PREFIX_HITS = _family("prefix_hits", COUNTER, "tokens found in the prefix cache",
                      ("vllm:prefix_cache_hits_total", "tokens", SUM_BY_NAME),
                      ("vllm:gpu_prefix_cache_hits_total", "tokens", SUM_BY_NAME),
                      ("vllm:gpu_prefix_cache_hits", "tokens", SUM_BY_NAME))
PROMPT_TOKENS_TOTAL = _family("prompt_tokens_total", COUNTER, "prompt tokens processed",
                              ("vllm:prompt_tokens_total", "tokens", SUM_BY_NAME))
GENERATION_TOKENS_TOTAL = _family("generation_tokens_total", COUNTER, "tokens generated",
                                  ("vllm:generation_tokens_total", "tokens", SUM_BY_NAME))
REQUEST_SUCCESS = _family("request_success", COUNTER, "finished requests, by finished_reason (stop, length, abort)",
                          ("vllm:request_success_total", "requests", "sum by (model_name, finished_reason) ({m})"))
ADMISSION_REJECTIONS = _family("admission_rejections", COUNTER, "requests refused at admission",
                               ("vllm:admission_rejections_total", "requests", SUM_BY_NAME))
SPEC_DRAFTS = _family("spec_drafts", COUNTER, "speculative decoding drafts",
                      ("vllm:spec_decode_num_drafts_total", "drafts", SUM_BY_NAME))
SPEC_DRAFT_TOKENS = _family("spec_draft_tokens", COUNTER, "speculative decoding draft tokens",
                            ("vllm:spec_decode_num_draft_tokens_total", "tokens", SUM_BY_NAME))
SPEC_ACCEPTED_TOKENS = _family("spec_accepted_tokens", COUNTER, "speculative decoding draft tokens accepted",
                               ("vllm:spec_decode_num_accepted_tokens_total", "tokens", SUM_BY_NAME))

# TorchServe
TS_QUEUE_TIME = _family("torchserve_queue_time", COUNTER, "cumulative time requests waited in the queue",
                        ("ts_queue_latency_microseconds", "µs", SUM_BY_NAME))
TS_INFERENCE_TIME = _family("torchserve_inference_time", COUNTER, "cumulative inference time",
                            ("ts_inference_latency_microseconds", "µs", SUM_BY_NAME))

# Histograms. Time to first token and between tokens: the LLM latency table reports their p50, p95 and p99.
TOKEN_QUANTILES = (0.5, 0.95, 0.99)
TTFT = _family("ttft", HISTOGRAM, "time to first token",
               ("vllm:time_to_first_token_seconds", "s", "model_name"),
               ("sglang:time_to_first_token_seconds", "s", "model_name"),
               ("gen_ai.server.time_to_first_token", "s", "gen_ai_request_model"),
               ("gen_ai_server_time_to_first_token_seconds", "s", "gen_ai_request_model"),
               quantiles=TOKEN_QUANTILES)
ITL = _family("itl", HISTOGRAM, "time between output tokens",
              ("vllm:inter_token_latency_seconds", "s", "model_name"),
              ("vllm:time_per_output_token_seconds", "s", "model_name"),
              ("sglang:inter_token_latency_seconds", "s", "model_name"),
              ("sglang:time_per_output_token_seconds", "s", "model_name"),
              ("gen_ai.server.time_per_output_token", "s", "gen_ai_request_model"),
              ("gen_ai_server_time_per_output_token_seconds", "s", "gen_ai_request_model"),
              quantiles=TOKEN_QUANTILES)
E2E = _family("e2e", HISTOGRAM, "request latency in the engine",
              ("vllm:e2e_request_latency_seconds", "s", "model_name"),
              ("sglang:e2e_request_latency_seconds", "s", "model_name"),
              ("gen_ai.server.request.duration", "s", "gen_ai_request_model"),
              ("gen_ai_server_request_duration_seconds", "s", "gen_ai_request_model"),
              ("tgi_request_duration", "s", ""))
QUEUE = _family("queue", HISTOGRAM, "time a request waited in the engine's queue",
                ("vllm:request_queue_time_seconds", "s", "model_name"), ("tgi_request_queue_duration", "s", ""))
PREFILL = _family("prefill", HISTOGRAM, "prefill time per request",
                  ("vllm:request_prefill_time_seconds", "s", "model_name"))
DECODE = _family("decode", HISTOGRAM, "decode time per request",
                 ("vllm:request_decode_time_seconds", "s", "model_name"))
INFERENCE = _family("inference", HISTOGRAM, "time a request spent in the model (prefill and decode)",
                    ("vllm:request_inference_time_seconds", "s", "model_name"),
                    ("tgi_request_inference_duration", "s", ""))
REQUEST_TPOT = _family("request_tpot", HISTOGRAM, "a request's mean time per output token",
                       ("vllm:request_time_per_output_token_seconds", "s", "model_name"),
                       ("tgi_request_mean_time_per_token_duration", "s", ""))
PROMPT_TOKENS = _family("prompt_tokens", HISTOGRAM, "prompt length",
                        ("vllm:request_prompt_tokens", "tokens", "model_name"),
                        ("tgi_request_input_length", "tokens", ""))
GENERATION_TOKENS = _family("generation_tokens", HISTOGRAM, "output length",
                            ("vllm:request_generation_tokens", "tokens", "model_name"),
                            ("tgi_request_generated_tokens", "tokens", ""))
MAX_TOKENS = _family("max_tokens", HISTOGRAM, "the max_tokens requests asked for",
                     ("vllm:request_params_max_tokens", "tokens", "model_name"),
                     ("tgi_request_max_new_tokens", "tokens", ""))
REQUEST_PREEMPTIONS = _family("request_preemptions", HISTOGRAM, "preemptions per request",
                              ("vllm:request_num_preemptions", "count", "model_name"))
ITERATION_TOKENS = _family("iteration_tokens", HISTOGRAM, "tokens per engine step",
                           ("vllm:iteration_tokens_total", "tokens", "model_name"))
VALIDATION = _family("validation", HISTOGRAM, "request validation time",
                     ("tgi_request_validation_duration", "s", ""))
BATCH_FORWARD = _family("batch_forward", HISTOGRAM, "time of one batch's forward, decode or filter step",
                        ("tgi_batch_forward_duration", "s", ""), ("tgi_batch_decode_duration", "s", ""),
                        ("tgi_batch_filter_duration", "s", ""))
TOKEN_USAGE = _family("token_usage", HISTOGRAM, "tokens per call, client side",
                      ("gen_ai.client.token.usage", "tokens", "gen_ai_request_model"),
                      ("gen_ai_client_token_usage", "tokens", "gen_ai_request_model"))
TS_STAGES = _family("torchserve_stages", HISTOGRAM, "TorchServe handler time per stage",
                    ("request_preprocess_seconds", "s", "model_name"), ("request_predict_seconds", "s", "model_name"),
                    ("request_postprocess_seconds", "s", "model_name"))


def aliases(name: str) -> tuple[str, ...]:
    """The other names of ``name``'s quantity (current first)."""
    family = CATALOGUE[name].family
    return tuple(m.name for m in CATALOGUE.values() if m.family == family and m.name != name)


def base_name(stored: str) -> str | None:
    """The catalogue name a stored series belongs to: itself, a histogram's ``_bucket``/``_sum``/``_count``
    or live mode's ``:p50|p95|p99``; None when it is none of the catalogue's."""
    if stored in CATALOGUE:
        return stored
    for suffix in ("_bucket", "_sum", "_count", ":p50", ":p95", ":p99"):
        m = CATALOGUE.get(stored.removesuffix(suffix)) if stored.endswith(suffix) else None
        if m is not None and m.kind == HISTOGRAM:
            return m.name
    return None


def live_queries(names, present) -> list[tuple[str, str]]:
    """(stored metric name, PromQL) for each of ``names`` (catalogue names) whose series the server has
    (``present``), in catalogue order."""
    wanted = set(names)
    return [q for m in CATALOGUE.values() if m.name in wanted and m.series_name in present for q in m.queries()]
