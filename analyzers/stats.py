"""Small numeric helpers shared by rules (numpy only)."""
from __future__ import annotations

import numpy as np


def spearman(x, y) -> float:
    """Spearman rank correlation; 0.0 when undefined (fewer than 3 points or a constant series)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rx = _ranks(x)
    ry = _ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    order = a.argsort(kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    ranks[order] = np.arange(len(a), dtype=float)
    # average ranks of ties
    vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv]


def thirds_ratio(key, value) -> tuple[float, float, float]:
    """Mean of ``value`` in the top third of ``key`` over the bottom third: (ratio, low_mean, high_mean)."""
    key = np.asarray(key, dtype=float)
    value = np.asarray(value, dtype=float)
    if len(key) < 3:
        return 1.0, float("nan"), float("nan")
    order = key.argsort(kind="mergesort")
    k = max(len(key) // 3, 1)
    low = float(value[order[:k]].mean())
    high = float(value[order[-k:]].mean())
    return (high / low if low > 0 else (float("inf") if high > 0 else 1.0)), low, high


def dispersion(counts) -> float:
    """Variance over mean of per-bucket request counts: about 1 for steady (Poisson) traffic, far above
    1 when the rate really changes. Guards 'grows with traffic' against bucket-to-bucket noise."""
    c = np.asarray(counts, dtype=float)
    return float(c.var(ddof=1) / c.mean()) if len(c) > 1 and c.mean() > 0 else 0.0
