"""Reading Prometheus samples from the store: series by metric name, counter rates, gauge summaries.

Metric names differ across exporters and versions; callers pass every accepted name (DESIGN.md §9).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GPU_UTIL = {  # name -> scale to a 0..1 fraction
    "DCGM_FI_DEV_GPU_UTIL": 0.01,
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 1.0,
    "nv_gpu_utilization": 1.0,
}
PENDING = ("nv_inference_pending_request_count", "vllm:num_requests_waiting", "tgi_queue_size")


@dataclass
class Series:
    metric: str
    labels: dict
    ts_ms: np.ndarray
    values: np.ndarray

    @property
    def key(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.metric}{{{inner}}}"


def series(store, names) -> list[Series]:
    names = list(names)
    if not names:
        return []
    rows = store.query(f"""
        SELECT metric, labels, list(ts_ms ORDER BY ts_ms), list(value ORDER BY ts_ms)
        FROM samples WHERE metric IN ({', '.join('?' * len(names))})
        GROUP BY metric, labels ORDER BY metric""", names)
    return [Series(m, dict(l or {}), np.asarray(t, dtype=np.int64), np.asarray(v, dtype=float)) for m, l, t, v in rows]


def counter_increase(s: Series) -> tuple[np.ndarray, np.ndarray]:
    """(interval end ts_ms, increase per interval), treating a drop as a counter reset."""
    if len(s.values) < 2:
        return np.array([], dtype=np.int64), np.array([])
    d = np.diff(s.values)
    d = np.where(d < 0, s.values[1:], d)
    return s.ts_ms[1:], d


def gpu_utilization(store) -> list[tuple[Series, float]]:
    """Each GPU utilization series with its 0..1 scale (DCGM percent, DCGM profiling, Triton)."""
    return [(s, GPU_UTIL[s.metric]) for s in series(store, GPU_UTIL)]


def triton_batch_size(store) -> dict[str, float]:
    """Average batch size per model over the window: increase(nv_inference_count)/increase(nv_inference_exec_count)."""
    out: dict[str, list[float]] = {}
    for s in series(store, ["nv_inference_count", "nv_inference_exec_count"]):
        model = s.labels.get("model", "?")
        _, inc = counter_increase(s)
        out.setdefault(model, [0.0, 0.0])[0 if s.metric == "nv_inference_count" else 1] += float(inc.sum())
    return {m: round(c / e, 3) for m, (c, e) in out.items() if e > 0}


def triton_queue_per_request(store) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per model: (ts_ms, request rate /s, mean queue ms per request) per scrape interval, from the
    cumulative counters nv_inference_queue_duration_us and nv_inference_request_success."""
    by_model: dict[str, dict[str, Series]] = {}
    for s in series(store, ["nv_inference_queue_duration_us", "nv_inference_request_success"]):
        by_model.setdefault(s.labels.get("model", "?") + "/" + s.labels.get("version", ""), {})[s.metric] = s
    out = []
    for parts in by_model.values():
        if len(parts) < 2:
            continue
        q, n = parts["nv_inference_queue_duration_us"], parts["nv_inference_request_success"]
        if len(q.ts_ms) != len(n.ts_ms) or not np.array_equal(q.ts_ms, n.ts_ms):
            continue
        ts, dq = counter_increase(q)
        _, dn = counter_increase(n)
        dt = np.diff(q.ts_ms) / 1000.0
        ok = (dn > 0) & (dt > 0)
        out.append((ts[ok], dn[ok] / dt[ok], dq[ok] / dn[ok] / 1000.0))
    return out
