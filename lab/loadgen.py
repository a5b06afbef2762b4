"""A bounded load generator for a Triton HTTP endpoint: open-loop Poisson arrivals at a rate, or a fixed
concurrency; a request mix of input sizes (e.g. the captured one, ``analyzers.requests.input_mix``); capped
by duration and request count. Reports client-side p50/p95/p99, throughput, errors and timeouts. For an LLM
(``run_llm``): the capture's prompt/output-length mix replayed through an OpenAI-compatible streaming API,
with client-side time to first token, inter-token latency, end-to-end and tokens/s. Only loopback targets
are allowed."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from triage.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Workload:
    rate_rps: float | None = 10.0      # open-loop Poisson arrivals; None → closed loop with `concurrency`
    rate_end_rps: float | None = None  # ramp linearly from rate_rps to this over the duration
    concurrency: int = 4
    duration_s: float = 20.0
    max_requests: int = 5000
    sizes: list[tuple[int, float]] = field(default_factory=lambda: [(16, 1), (32, 1), (64, 1), (128, 1)])
    timeout_s: float = 5.0
    seed: int = 0
    vocab: int = 2000
    target: str = "triton"   # "triton": /v2/models/<m>/infer; "gateway": POST /v1/classify; "torchserve": /predictions/<m>


@dataclass
class LoadResult:
    sent: int
    ok: int
    errors: int
    timeouts: int
    seconds: float
    latencies_ms: np.ndarray

    def summary(self) -> dict:
        lat = self.latencies_ms
        pct = (lambda q: round(float(np.percentile(lat, q)), 3) if len(lat) else None)
        return {"requests": self.sent, "ok": self.ok, "errors": self.errors, "timeouts": self.timeouts,
                "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
                "throughput_rps": round(self.ok / self.seconds, 3) if self.seconds else 0.0,
                "error_rate": round((self.errors + self.timeouts) / self.sent, 5) if self.sent else 0.0}


def _payload(rng: np.random.Generator, size: int, vocab: int) -> dict:
    ids = rng.integers(0, vocab, size=size).tolist()
    return {"inputs": [{"name": "IDS", "shape": [1, size], "datatype": "INT64", "data": ids}]}


def run(url: str, model: str, w: Workload, stop: threading.Event | None = None) -> LoadResult:
    """Send the workload; ``stop`` ends it early (the demo's background load)."""
    import requests

    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise UsageError(f"load is only sent to loopback addresses, not {host}")
    rng = np.random.default_rng(w.seed)
    sizes = np.array([s for s, _ in w.sizes])
    p = np.array([x for _, x in w.sizes], dtype=float)
    p /= p.sum()
    n = w.max_requests
    plan_sizes = rng.choice(sizes, size=n, p=p)
    if w.target == "gateway":
        payloads = [{"tokens": int(s)} for s in plan_sizes]
        endpoint = f"{url}/v1/classify"
    elif w.target == "torchserve":
        payloads = [{"ids": rng.integers(0, w.vocab, size=int(s)).tolist()} for s in plan_sizes]
        endpoint = f"{url}/predictions/{model}"
    else:
        payloads = [_payload(rng, int(s), w.vocab) for s in plan_sizes]
        endpoint = f"{url}/v2/models/{model}/infer"
    local = threading.local()
    lat: list[float] = []
    counts = {"ok": 0, "errors": 0, "timeouts": 0, "sent": 0}
    lock = threading.Lock()

    def send(i: int) -> None:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        t = time.perf_counter()
        try:
            r = s.post(endpoint, json=payloads[i], timeout=w.timeout_s)
            ok = r.status_code == 200
            key = "ok" if ok else "errors"
        except requests.Timeout:
            ok, key = False, "timeouts"
        except requests.RequestException:
            ok, key = False, "errors"
        with lock:
            counts[key] += 1
            if ok:
                lat.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    end = start + w.duration_s
    if w.rate_rps:
        unit_gaps = rng.exponential(1.0, size=n)
        with ThreadPoolExecutor(max_workers=64) as pool:
            due = start
            for i in range(n):
                if stop is not None and stop.is_set():
                    break
                frac = min((due - start) / w.duration_s, 1.0)
                rate = w.rate_rps + (frac * (w.rate_end_rps - w.rate_rps) if w.rate_end_rps else 0.0)
                due += unit_gaps[i] / rate
                if due >= end:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    if stop is not None:
                        if stop.wait(delay):
                            break
                    else:
                        time.sleep(delay)
                counts["sent"] += 1
                pool.submit(send, i)
    else:
        nxt = iter(range(n))
        nxt_lock = threading.Lock()

        def worker():
            while time.perf_counter() < end:
                with nxt_lock:
                    i = next(nxt, None)
                    if i is None:
                        return
                    counts["sent"] += 1
                send(i)

        threads = [threading.Thread(target=worker) for _ in range(w.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - start
    return LoadResult(counts["sent"], counts["ok"], counts["errors"], counts["timeouts"], elapsed,
                      np.asarray(lat, dtype=float))


# ---- LLM load: the capture's prompt/output-length mix, streamed through the OpenAI-compatible API ------------

LLM_WORDS = "the model serves tokens latency queue prefill decode cache request batch prompt answer".split()


def llm_mix(store) -> list[tuple[int, int]]:
    """The capture's (prompt tokens, output tokens) per request, in arrival order, from its LLM engine spans."""
    from triage.analyzers import llm_signals as sig

    return [(int(r["prompt_tokens"]), int(r["output_tokens"])) for r in sig.engine_requests(store)
            if r["prompt_tokens"] is not None and r["output_tokens"] is not None]


def llm_jobs(mix: list[tuple[int, int]], seed: int = 0) -> list[tuple[str, int]]:
    """Requests replaying ``mix``: a prompt of (prompt tokens - 1) words (the lab tokenizer makes one token of
    each word, plus BOS) and ``max_tokens`` = the output tokens (sent with ``ignore_eos``, so exactly that many)."""
    import random

    rnd = random.Random(seed)
    return [(" ".join(rnd.choice(LLM_WORDS) for _ in range(max(pt - 1, 1))), max(ot, 1)) for pt, ot in mix]


@dataclass
class LLMResult:
    sent: int
    ok: int
    errors: int
    seconds: float
    ttft_ms: np.ndarray          # per request, to the first text chunk
    itl_ms: np.ndarray           # every gap between two text chunks of a request
    e2e_ms: np.ndarray           # per request, to the end of the stream
    tokens: int                  # completion tokens received (the streams' usage)

    def summary(self) -> dict:
        pct = (lambda a, q: round(float(np.percentile(a, q)), 3) if len(a) else None)
        return {"requests": self.sent, "ok": self.ok, "errors": self.errors,
                "ttft_p50_ms": pct(self.ttft_ms, 50), "ttft_p95_ms": pct(self.ttft_ms, 95),
                "itl_p50_ms": pct(self.itl_ms, 50), "itl_p95_ms": pct(self.itl_ms, 95),
                "p50_ms": pct(self.e2e_ms, 50), "p95_ms": pct(self.e2e_ms, 95), "p99_ms": pct(self.e2e_ms, 99),
                "throughput_tok_s": round(self.tokens / self.seconds, 2) if self.seconds else 0.0,
                "error_rate": round(self.errors / self.sent, 5) if self.sent else 0.0}


def _stream(session, url: str, body: dict, timeout_s: float) -> tuple[float | None, list[float], float, int]:
    """One streamed generation: (TTFT s, inter-chunk gaps s, end-to-end s, completion tokens)."""
    import json

    t0 = time.perf_counter()
    first, last, gaps, tokens = None, None, [], 0
    with session.post(url, json=body, stream=True, timeout=timeout_s) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            msg = json.loads(line[6:])
            if any(c.get("text") for c in msg.get("choices") or []):
                now = time.perf_counter()
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
            if msg.get("usage"):
                tokens = int(msg["usage"].get("completion_tokens") or 0)
    return first, gaps, time.perf_counter() - t0, tokens


def run_llm(url: str, jobs: list[tuple[str, int]], concurrency: int, path: str = "/v1/generate",
            model: str = "tiny-llama", timeout_s: float = 120.0, spawn_s: float = 0.0) -> LLMResult:
    """Send ``jobs`` (prompt, max_tokens) from ``concurrency`` closed-loop clients, streaming, to ``url + path``
    (the lab gateway's ``/v1/generate``, or vLLM's own ``/v1/completions``); client-side TTFT, ITL, end-to-end.
    ``spawn_s``: the clients start evenly over this many seconds (a ramp-up), so their first requests do not
    all arrive in the same instant (a burst no steady state has, which would own a small run's tail)."""
    import requests

    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load is only sent to loopback addresses, not {host}")
    local = threading.local()
    lock = threading.Lock()
    ttft, itl, e2e = [], [], []
    counts = {"ok": 0, "errors": 0, "tokens": 0}

    def send(job: tuple[str, int]) -> None:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        body = {"prompt": job[0], "max_tokens": job[1]}
        if path == "/v1/completions":
            body.update(model=model, stream=True, ignore_eos=True, temperature=0.0,
                        stream_options={"include_usage": True})
        try:
            first, gaps, total, tokens = _stream(s, f"{url}{path}", body, timeout_s)
        except (requests.RequestException, ValueError):
            first = None
        with lock:
            if first is None:
                counts["errors"] += 1
                return
            counts["ok"] += 1
            counts["tokens"] += tokens
            ttft.append(first * 1e3)
            itl.extend(g * 1e3 for g in gaps)
            e2e.append(total * 1e3)

    nxt, nxt_lock, stop = iter(jobs), threading.Lock(), threading.Event()

    def client(i: int) -> None:
        if stop.wait(spawn_s * i / concurrency):
            return
        while not stop.is_set():
            with nxt_lock:
                job = next(nxt, None)
            if job is None:
                return
            send(job)

    # daemon threads: when triage is told to stop (a hang-up, SIGTERM) the clients stop taking jobs and their
    # streams in flight do not hold the process (a pool would be joined at exit)
    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    start = time.perf_counter()
    for t in clients:
        t.start()
    try:
        for t in clients:
            t.join()
    except BaseException:
        stop.set()
        raise
    arr = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    return LLMResult(len(jobs), counts["ok"], counts["errors"], time.perf_counter() - start, arr(ttft), arr(itl),
                     arr(e2e), counts["tokens"])
