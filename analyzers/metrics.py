"""Reading Prometheus samples from the store: series by metric name, counter rates, gauge summaries.

Metric names differ across exporters and versions; callers pass every accepted name, from the one catalogue
(``collectors.metric_catalogue``, DESIGN.md §9).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triage.collectors.metric_catalogue import (CATALOGUE, GPU_UTILIZATION, TRITON_EXECUTIONS, TRITON_INFERENCES,
                                                TRITON_QUEUE_TIME, TRITON_SUCCESS)

# name -> scale to a 0..1 fraction (DCGM's percent, DCGM profiling and Triton fractions)
GPU_UTIL = {name: 0.01 if CATALOGUE[name].unit == "percent" else 1.0 for name in GPU_UTILIZATION}
BATCH_SIZE = TRITON_INFERENCES + TRITON_EXECUTIONS  # what triton_batch_size reads
QUEUE_PER_REQUEST = TRITON_QUEUE_TIME + TRITON_SUCCESS  # what triton_queue_per_request reads


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
    for s in series(store, BATCH_SIZE):
        model = s.labels.get("model", "?")
        _, inc = counter_increase(s)
        out.setdefault(model, [0.0, 0.0])[0 if s.metric == "nv_inference_count" else 1] += float(inc.sum())
    return {m: round(c / e, 3) for m, (c, e) in out.items() if e > 0}


def triton_queue_per_request(store) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per model: (ts_ms, request rate /s, mean queue ms per request) per scrape interval, from the
    cumulative counters nv_inference_queue_duration_us and nv_inference_request_success."""
    by_model: dict[str, dict[str, Series]] = {}
    for s in series(store, QUEUE_PER_REQUEST):
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


def histogram_quantiles(store, names, qs=(0.5, 0.95, 0.99)) -> dict[str, dict]:
    """Per histogram family (the first of ``names`` present) and ``model_name`` label: the quantiles ``qs`` of
    the observations made during the window, from the increase of each cumulative ``_bucket{le}`` counter
    between its first and last sample (resets handled; a single scrape counts from the server's start), summed over the other labels; linear within a bucket,
    the top finite bound for the +Inf bucket (as PromQL's ``histogram_quantile``). Returns
    ``{model: {"metric": name, "count": n, "q": {q: value}}}`` in the histogram's unit; empty when none."""
    for name in names:
        by_model: dict[str, dict[float, float]] = {}
        for s in series(store, [f"{name}_bucket"]):
            le = s.labels.get("le")
            try:
                bound = float(le)
            except (TypeError, ValueError):
                continue
            inc = _window_increase(s)
            model = _model_label(s.labels)
            cum = by_model.setdefault(model, {})
            cum[bound] = cum.get(bound, 0.0) + float(inc.sum())
        out = {}
        for model, cum in by_model.items():
            bounds = sorted(cum)
            counts = np.maximum.accumulate(np.array([cum[b] for b in bounds]))  # cumulative: never decreasing
            total = counts[-1] if len(counts) else 0.0
            if total <= 0 or not np.isinf(bounds[-1]):
                continue
            qv = {}
            for q in qs:
                rank = q * total
                i = int(np.searchsorted(counts, rank, side="left"))
                if np.isinf(bounds[i]):
                    qv[q] = bounds[-2] if len(bounds) > 1 else float("nan")
                    continue
                lo_b = bounds[i - 1] if i > 0 else 0.0
                lo_c = counts[i - 1] if i > 0 else 0.0
                width = counts[i] - lo_c
                qv[q] = lo_b + (bounds[i] - lo_b) * ((rank - lo_c) / width if width > 0 else 1.0)
            out[model] = {"metric": name, "count": int(round(total)), "q": qv}
        if out:
            return out
    return {}


def histogram_mean(store, name: str) -> dict[str, tuple[float, int]]:
    """Per ``model_name``: (mean, count) of a histogram's observations during the window, from the increases
    of its ``_sum`` and ``_count`` counters (exact, unlike bucket quantiles)."""
    acc: dict[str, list[float]] = {}
    for s in series(store, [f"{name}_sum", f"{name}_count"]):
        model = _model_label(s.labels)
        inc = _window_increase(s)
        acc.setdefault(model, [0.0, 0.0])[0 if s.metric.endswith("_sum") else 1] += float(inc.sum())
    return {m: (v[0] / v[1], int(round(v[1]))) for m, v in acc.items() if v[1] > 0}


def _window_increase(s: Series) -> np.ndarray:
    """A cumulative series' increases during the window; a single scrape counts from the server's start."""
    return s.values if len(s.values) == 1 else counter_increase(s)[1]


def _model_label(labels: dict) -> str:
    """The served model a series is about: vLLM/SGLang ``model_name``, OTel GenAI ``gen_ai_request_model``."""
    return (labels.get("model_name") or labels.get("gen_ai_request_model") or labels.get("model")
            or labels.get("model_id") or "")


def quantile_series_median(store, name: str, q: float) -> dict[str, float]:
    """Per model: the median over the window of a quantile series computed by Prometheus (live mode stores
    ``histogram_quantile`` over a 1-minute rate as ``<name>:p50|p95|p99``); NaN steps (no traffic) ignored."""
    out: dict[str, list[float]] = {}
    for s in series(store, [f"{name}:p{round(q * 100)}"]):
        v = s.values[np.isfinite(s.values)]
        out.setdefault(_model_label(s.labels), []).extend(v.tolist())
    return {m: float(np.median(v)) for m, v in out.items() if v}
