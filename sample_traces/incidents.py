"""The bundled incidents: one profile per triage question, each with its seed."""
from __future__ import annotations

from .simulate import Incident


def _lognormal(median_ms: float, sigma: float = 0.2):
    return lambda rng, tokens: median_ms * rng.lognormal(0, sigma)


INCIDENTS: dict[str, tuple[Incident, int]] = {
    "healthy": (Incident(
        name="healthy", route="/v1/classify", duration_s=90, rate=lambda t: 10.0,
        input_sizes=((32, 50), (64, 40), (128, 10)), tokenize_ms_per_token=0.01,
        server_ms=_lognormal(18.0, 0.15), gpu_fraction=0.9,
        cause="nothing is wrong: steady traffic well under capacity, fast preprocessing, no retries, "
              "a busy-enough GPU and no batching window to wait out.",
        expected_rule="(none at warning or above)",
        story="A normal afternoon, for comparison: what triage says when there is nothing to fix."), 5),
    "slow-tokenizer": (Incident(
        name="slow-tokenizer", route="/v1/classify", duration_s=90, rate=lambda t: 12.0,
        input_sizes=((32, 30), (64, 30), (128, 20), (512, 12), (2048, 8)),
        tokenize_ms_per_token=0.06, server_ms=_lognormal(9.0), gpu_fraction=0.8,
        cause="a pure-Python tokenizer runs on the request path; its cost grows with input length, so "
              "long inputs (512–2048 tokens) spend 30–120 ms tokenizing while the model answers in ~9 ms.",
        expected_rule="preprocessing-share",
        story="p95 of /v1/classify jumped after a release that switched to a pure-Python tokenizer."), 11),
    "gpu-idle": (Incident(
        name="gpu-idle", route="/v1/embed", duration_s=75, rate=lambda t: 14.0,
        input_sizes=((32, 50), (64, 50)), tokenize_ms_per_token=0.004,
        server_ms=_lognormal(50.0, 0.1), gpu_fraction=0.25,
        cause="the model runs one request at a time (no dynamic batching, one instance); each execution "
              "spends most of its 50 ms in host-side work, so the GPU is ~17% busy while requests queue.",
        expected_rule="gpu-underutilized",
        story="Steady traffic, yet p95 is twice the model's execution time and the GPU dashboard is nearly idle."), 23),
    "overload": (Incident(
        name="overload", route="/v1/classify", duration_s=100, rate=lambda t: 5.0 + 14.5 * t / 100.0,
        input_sizes=((32, 50), (64, 50)), tokenize_ms_per_token=0.004,
        server_ms=_lognormal(50.0, 0.1), gpu_fraction=0.9,
        cause="traffic ramps from 5 to 19.5 req/s against a fixed single model instance (capacity ~20 req/s); "
              "queueing delay grows with the arrival rate.",
        expected_rule="queueing-growth",
        story="A marketing push quadrupled traffic in under two minutes; nothing scales on queue depth."), 37),
    "retry-storm": (Incident(
        name="retry-storm", route="/v1/classify", duration_s=70,
        rate=lambda t: 10.0 if t < 20 or t > 35 else 26.0,
        input_sizes=((32, 50), (64, 50)), tokenize_ms_per_token=0.004,
        server_ms=_lognormal(50.0, 0.1), gpu_fraction=0.9,
        client_timeout_ms=300.0, max_retries=2, retry_backoff_ms=5.0,
        cause="a 15-second burst above capacity (26 req/s vs ~20) pushes latency past the gateway's 300 ms timeout; the gateway "
              "retries twice without backoff or budget, the server still runs the abandoned calls, and the "
              "extra load keeps it saturated after the burst ends.",
        expected_rule="retry-spiral",
        story="A short traffic burst turned into minutes of timeouts and 504s."), 41),
}


# Scenarios the tests generate on the fly (not bundled): the shapes of incidents seen on a real Triton stack.
SCENARIOS: dict[str, tuple[Incident, int]] = {
    "healthy-1ms-window": (Incident(
        name="healthy-1ms-window", route="/v1/classify", duration_s=60, rate=lambda t: 20.0,
        input_sizes=((32, 60), (64, 40)), tokenize_ms_per_token=0.01,
        server_ms=_lognormal(3.5, 0.15), gpu_fraction=0.9, batch_window_ms=1.0, max_batch=8,
        cause="nothing is wrong: light steady traffic (20 req/s against a ~3.5 ms model) behind a 1 ms "
              "dynamic-batching window; requests wait out the 1 ms timer, which is all the queueing there is.",
        expected_rule="(none at warning or above)",
        story="A healthy service with a small batching window: p95 under 10 ms."), 51),
    "ramp-2ms-window": (Incident(
        name="ramp-2ms-window", route="/v1/classify", duration_s=90, rate=lambda t: 30.0 + 200.0 * t / 90.0,
        input_sizes=((32, 60), (64, 40)), tokenize_ms_per_token=0.01,
        server_ms=_lognormal(5.0, 0.1), gpu_fraction=0.9, batch_window_ms=2.0, max_batch=16, batch_cost=0.9,
        cause="traffic ramps past the model's capacity (batches of up to 16 raise it only to ~ 220 req/s); "
              "the 2 ms batching window is held at low load, but the tail is queueing from contention.",
        expected_rule="queueing-growth",
        story="A load ramp: queueing dominates the p95 tail; the small batching window is immaterial."), 53),
}
