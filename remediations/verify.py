"""Before anything is offered: the candidate must run on several real input shapes, agree with the
original on calibration inputs (top-1 and max abs difference, against the guardrails), and be measured
(p50/p95/p99, throughput, size, peak memory) under ONNX Runtime with the configured threads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Measurement:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_per_s: float
    size_bytes: int
    peak_rss_mb: float | None
    threads: int
    batch_shape: list[int]


@dataclass
class Verdict:
    ok: bool
    shape_failures: list[dict] = field(default_factory=list)
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    guardrail_failures: list[str] = field(default_factory=list)
    before: Measurement | None = None
    after: Measurement | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.before and self.after:
            d["speedup_p95"] = round(self.before.p95_ms / self.after.p95_ms, 3) if self.after.p95_ms else None
            d["size_ratio"] = round(self.after.size_bytes / self.before.size_bytes, 3)
        return d


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run_shapes(path: Path, feeds: list[dict], threads: int = 1, sess=None) -> list[dict]:
    """Every feed that fails to run (an export that baked a shape fails here), with its shape and the error.
    ``sess``: a session of ``path`` already built (building one parses and optimises the model)."""
    sess = sess or session(path, threads)
    failures = []
    for feed in feeds:
        try:
            sess.run(None, feed)
        except Exception as exc:
            failures.append({"shape": [list(v.shape) for v in feed.values()][0], "error": str(exc).splitlines()[0][:300]})
    return failures


def agreement(original: Path, candidate: Path, feeds: list[dict], threads: int = 1,
              sessions: tuple | None = None) -> tuple[float, float]:
    a, b = sessions or (session(original, threads), session(candidate, threads))
    same = total = 0
    max_diff = 0.0
    for feed in feeds:
        ya = a.run(None, feed)[0].astype(np.float64)
        yb = b.run(None, feed)[0].astype(np.float64)
        max_diff = max(max_diff, float(np.max(np.abs(ya - yb))))
        same += int(np.sum(ya.argmax(-1) == yb.argmax(-1)))
        total += int(np.prod(ya.shape[:-1]))
    return (same / total if total else 1.0), max_diff


def measure(path: Path, feed: dict, threads: int, iters: int = 200, warmup: int = 20, sess=None) -> Measurement:
    """Latency and throughput in this process; peak memory in a clean child process."""
    sess = sess or session(path, threads)
    for _ in range(warmup):
        sess.run(None, feed)
    times = np.empty(iters)
    t_all = time.perf_counter()
    for i in range(iters):
        t = time.perf_counter()
        sess.run(None, feed)
        times[i] = time.perf_counter() - t
    elapsed = time.perf_counter() - t_all
    batch = int(next(iter(feed.values())).shape[0])
    return Measurement(
        p50_ms=round(float(np.percentile(times, 50)) * 1e3, 4), p95_ms=round(float(np.percentile(times, 95)) * 1e3, 4),
        p99_ms=round(float(np.percentile(times, 99)) * 1e3, 4), throughput_per_s=round(iters * batch / elapsed, 2),
        size_bytes=os.path.getsize(path), peak_rss_mb=peak_rss_mb(path, feed, threads), threads=threads,
        batch_shape=list(next(iter(feed.values())).shape))


_PEAK = """
import resource, sys, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], sess_options=so, providers=["CPUExecutionProvider"])
d = np.load(sys.argv[3])
for _ in range(5): s.run(None, {k: d[k] for k in d.files})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(path: Path, feed: dict, threads: int) -> float | None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".npz", delete=False) as fh:
        np.savez(fh, **feed)
    try:
        out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(threads), fh.name], capture_output=True,
                             text=True, timeout=120)
        return round(float(out.stdout.strip().splitlines()[-1]), 1) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    finally:
        os.unlink(fh.name)


def verify(original: Path, candidate: Path, shape_feeds: list[dict], calib_feeds: list[dict], bench_feed: dict,
           guardrails: dict, threads: int, iters: int = 200) -> Verdict:
    v = Verdict(ok=False)
    a, b = session(original, threads), session(candidate, threads)  # once each, for every check below
    v.shape_failures = run_shapes(candidate, shape_feeds, threads, sess=b)
    base_failures = run_shapes(original, shape_feeds, threads, sess=a)
    if base_failures:  # the original itself cannot take these shapes: say so, precisely
        v.guardrail_failures.append("the original model fails on shapes " +
                                    ", ".join(str(f["shape"]) for f in base_failures))
    if v.shape_failures:
        v.guardrail_failures.append("the candidate fails on shapes " + ", ".join(str(f["shape"]) for f in v.shape_failures))
        return v
    v.top1_agreement, v.max_abs_diff = agreement(original, candidate, calib_feeds, threads, sessions=(a, b))
    need = float(guardrails.get("min_top1_agreement", 0.99))
    if v.top1_agreement < need:
        v.guardrail_failures.append(f"top-1 agreement {v.top1_agreement:.2%} < {need:.2%} (guardrails.min_top1_agreement)")
    if "max_abs_diff" in guardrails and v.max_abs_diff > float(guardrails["max_abs_diff"]):
        v.guardrail_failures.append(f"max abs difference {v.max_abs_diff:.4f} > {guardrails['max_abs_diff']} "
                                    "(guardrails.max_abs_diff)")
    v.before = measure(original, bench_feed, threads, iters, sess=a)
    v.after = measure(candidate, bench_feed, threads, iters, sess=b)
    v.ok = not v.guardrail_failures
    return v


def to_json(v: Verdict) -> str:
    return json.dumps(v.to_dict())
