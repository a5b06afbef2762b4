"""A small discrete-event simulation of an inference service: gateway (tokenize → model server → postprocess)
in front of a single-queue model server, with client timeouts and retries.

It decides *when* things happen; ``generate.py`` turns the result into real OpenTelemetry spans (SDK)
and Prometheus text. Stage timings are controlled by an ``Incident`` profile.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

MS = 1_000_000  # ns


@dataclass
class Incident:
    name: str
    route: str
    duration_s: float
    rate: Callable[[float], float]          # requests/s at time t (s)
    input_sizes: tuple[tuple[int, float], ...]  # (tokens, weight)
    tokenize_ms_per_token: float
    server_ms: Callable[[np.random.Generator, int], float]  # per request service time at the model server
    gpu_fraction: float                      # share of server time the GPU kernel is busy
    postprocess_ms: float = 0.8
    client_timeout_ms: float = 10_000.0
    max_retries: int = 0
    retry_backoff_ms: float = 5.0
    instances: int = 1
    feature_ms: Callable[[np.random.Generator], float] | None = None  # a feature-store call before tokenize
    cold_start_s: float = 0.0                # attempts starting this early run cold_factor times slower
    cold_factor: float = 1.0
    gpu_memory_frac: float = 0.45            # DCGM framebuffer used / total
    clock_event_reasons: int = 0             # DCGM_FI_DEV_CLOCKS_EVENT_REASONS bitmask (0: none)
    # Triton's dynamic batcher (off when max_batch is 1): a batch leaves when it holds max_batch requests or
    # when its oldest request has waited batch_window_ms (max_queue_delay_microseconds), whichever is first;
    # a batch of n takes server_ms x (1 + batch_cost x (n - 1)) (batch_cost: the extra cost of one more request)
    batch_window_ms: float = 0.0
    max_batch: int = 1
    batch_cost: float = 0.15
    preprocess_span_name: str = "tokenize"   # the gateway's preprocessing span (e.g. build_prompt: no keyword)
    # when > 0, the gateway's root span carries app.input_hash, and this share of requests repeats an
    # earlier request's input (drawn from a separate random stream: the timings do not change)
    input_repeat: float = 0.0
    cause: str = ""
    expected_rule: str = ""
    story: str = ""


@dataclass
class Attempt:
    resend: int
    sent_ns: int           # client span start
    arrive_ns: int         # at the server
    start_ns: int = 0      # compute start
    end_ns: int = 0        # compute end
    client_end_ns: int = 0
    timed_out: bool = False


@dataclass
class Request:
    idx: int
    start_ns: int
    tokens: int
    tokenize_end_ns: int
    feature_end_ns: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    post_start_ns: int = 0
    end_ns: int = 0
    failed: bool = False


def arrivals(inc: Incident, rng: np.random.Generator, t0_ns: int) -> list[int]:
    """Non-homogeneous Poisson arrivals by thinning."""
    peak = max(inc.rate(t) for t in np.linspace(0, inc.duration_s, 200)) * 1.05
    t, out = 0.0, []
    while True:
        t += rng.exponential(1.0 / peak)
        if t >= inc.duration_s:
            return out
        if rng.random() < inc.rate(t) / peak:
            out.append(t0_ns + int(t * 1e9))


def run(inc: Incident, seed: int, t0_ns: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    sizes = np.array([s for s, _ in inc.input_sizes])
    weights = np.array([w for _, w in inc.input_sizes], dtype=float)
    weights /= weights.sum()
    reqs: list[Request] = []
    heap: list[tuple[int, int, int]] = []  # (arrive_ns, request idx, resend)
    for i, a in enumerate(arrivals(inc, rng, t0_ns)):
        tokens = int(rng.choice(sizes, p=weights))
        tok_ms = tokens * inc.tokenize_ms_per_token * rng.lognormal(0, 0.15) + 0.05
        feat_end = a + int(0.1 * MS) + int(inc.feature_ms(rng) * MS) if inc.feature_ms else 0
        tok_start = (feat_end or a) + int(0.15 * MS)
        r = Request(i, a, tokens, tok_start + int(tok_ms * MS), feat_end)
        reqs.append(r)
        sent = r.tokenize_end_ns + int(0.05 * MS)
        r.attempts.append(Attempt(0, sent, sent + int(0.3 * MS)))
        heapq.heappush(heap, (sent + int(0.3 * MS), i, 0))
    free = [t0_ns] * inc.instances
    timeout_ns = int(inc.client_timeout_ms * MS)
    if inc.max_batch > 1:
        _batched(inc, rng, reqs, heap, free, t0_ns)
        return reqs
    while heap:
        arrive, i, resend = heapq.heappop(heap)
        r = reqs[i]
        att = r.attempts[resend]
        k = int(np.argmin(free))
        att.start_ns = max(arrive, free[k])
        cold = inc.cold_factor if att.start_ns - t0_ns < inc.cold_start_s * 1e9 else 1.0
        att.end_ns = att.start_ns + int(inc.server_ms(rng, r.tokens) * cold * MS)
        free[k] = att.end_ns
        done_at_client = att.end_ns + int(0.4 * MS)
        if done_at_client - att.sent_ns > timeout_ns:
            att.timed_out = True
            att.client_end_ns = att.sent_ns + timeout_ns
            if resend < inc.max_retries:
                sent = att.client_end_ns + int(inc.retry_backoff_ms * MS)
                r.attempts.append(Attempt(resend + 1, sent, sent + int(0.3 * MS)))
                heapq.heappush(heap, (sent + int(0.3 * MS), i, resend + 1))
            else:
                r.failed = True
                r.post_start_ns = att.client_end_ns
                r.end_ns = att.client_end_ns + int(0.2 * MS)
        else:
            _finish(inc, rng, r, done_at_client)
    return reqs


def _finish(inc: Incident, rng: np.random.Generator, r: Request, done_at_client: int) -> None:
    r.attempts[-1].client_end_ns = done_at_client
    r.post_start_ns = done_at_client + int(0.05 * MS)
    post = inc.postprocess_ms * rng.lognormal(0, 0.2)
    r.end_ns = r.post_start_ns + int(post * MS) + int(0.1 * MS)


QUEUE_AFTER_ARRIVAL_NS = 70_000  # Triton's QUEUE_START comes this long after the request arrives (generate.py)


def _batched(inc: Incident, rng: np.random.Generator, reqs: list[Request], heap: list, free: list[int],
             t0_ns: int) -> None:
    """Triton's dynamic batcher in front of ``inc.instances`` instances (no client timeouts: the batching
    profiles have none). The oldest waiting request opens a batch; the batch leaves when it is full, or when
    that request has waited the window from its QUEUE_START, or later when no instance is free until then."""
    window_ns = int(inc.batch_window_ms * MS)
    while heap:
        arrive, i, resend = heapq.heappop(heap)
        k = int(np.argmin(free))
        deadline = max(free[k], arrive + QUEUE_AFTER_ARRIVAL_NS + window_ns)
        batch = [(arrive, i, resend)]
        while heap and len(batch) < inc.max_batch and heap[0][0] <= deadline:
            batch.append(heapq.heappop(heap))
        # a full batch leaves as soon as its last request is in (and an instance is free)
        start = max(free[k], batch[-1][0] + QUEUE_AFTER_ARRIVAL_NS + 10_000) if len(batch) == inc.max_batch else deadline
        head = reqs[i]
        cold = inc.cold_factor if start - t0_ns < inc.cold_start_s * 1e9 else 1.0
        dur = int(inc.server_ms(rng, head.tokens) * cold * (1 + inc.batch_cost * (len(batch) - 1)) * MS)
        free[k] = start + dur
        for _, j, rs in batch:
            att = reqs[j].attempts[rs]
            att.start_ns, att.end_ns = start, start + dur
            _finish(inc, rng, reqs[j], att.end_ns + int(0.4 * MS))
