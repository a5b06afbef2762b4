"""A bounded load generator for a Triton HTTP endpoint: open-loop Poisson arrivals at a rate, or a fixed
concurrency; a request mix of input sizes (e.g. the captured one, ``analyzers.requests.input_mix``); capped
by duration and request count. Reports client-side p50/p95/p99, throughput, errors and timeouts. Only
loopback targets are allowed."""
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
