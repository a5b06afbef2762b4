"""Latency statistics over the ``requests`` / ``request_stages`` tables built by ``analyzers.stages``.

Percentiles are linear interpolation (DuckDB ``quantile_cont``, the same as numpy's default).
The tail cohort of a route is its requests whose end-to-end latency is >= the route's p95.
"""
from __future__ import annotations

from .stages import STAGES, per_build

MS = 1e6

def window(store) -> tuple[int | None, int | None]:
    """(start_ns, end_ns) covered by spans and metric samples."""
    row = store.query("""
        SELECT min(t0), max(t1) FROM (
            SELECT min(start_ns) t0, max(end_ns) t1 FROM spans
            UNION ALL SELECT min(ts_ms) * 1000000, max(ts_ms) * 1000000 FROM samples)""")[0]
    return row[0], row[1]


def _requests(where: str | None) -> str:
    """The requests to compute on, as a FROM item: the table, or only its rows (aliased ``r``) that satisfy
    ``where`` (``analyzers.requests.cohort_where`` makes one from a filter)."""
    return "requests" if where is None else f"(SELECT * FROM requests r WHERE {where})"


@per_build
def route_latency(store) -> dict[str, dict]:
    return _route_latency(store, "requests", [])


def _route_latency(store, src: str, params: list) -> dict[str, dict]:
    rows = store.query(f"""
        SELECT route, count(*), quantile_cont(duration_ns, 0.5), quantile_cont(duration_ns, 0.95),
               quantile_cont(duration_ns, 0.99), avg(error::INT)
        FROM {src} GROUP BY route ORDER BY count(*) DESC, route""", params)
    return {r[0]: {"requests": r[1], "p50_ms": round(r[2] / MS, 3), "p95_ms": round(r[3] / MS, 3),
                   "p99_ms": round(r[4] / MS, 3), "error_rate": round(r[5], 6)} for r in rows}


def _tail_cohort_sql(src: str) -> str:
    return f"""
    WITH p AS (SELECT route, quantile_cont(duration_ns, 0.95) AS p95 FROM {src} GROUP BY route)
    SELECT q.* FROM {src} q JOIN p USING (route) WHERE q.duration_ns >= p.p95
"""


TAIL_COHORT_SQL = _tail_cohort_sql("requests")


def tail_exemplars(store, stage: str, route: str | None = None, n: int = 3) -> list[str]:
    """Trace ids of the tail-cohort requests that spent the most time in ``stage``."""
    where = "AND t.route = ?" if route else ""
    return [r[0] for r in store.query(f"""
        WITH tail AS ({TAIL_COHORT_SQL}) SELECT t.trace_id FROM tail t JOIN request_stages rs
          ON rs.trace_id = t.trace_id AND rs.root_id = t.root_id AND rs.stage = ?
        WHERE true {where} ORDER BY rs.ns DESC, t.trace_id LIMIT {int(n)}""", [stage] + ([route] if route else []))]


@per_build
def stage_breakdown(store) -> dict[str, dict[str, dict]]:
    """Per route and stage: median share of end-to-end time over the tail cohort (``p95_share``),
    and the stage's own p50/p95 across all requests of the route (0 where a request lacks it)."""
    return _stage_breakdown(store, "requests", [])


def _stage_breakdown(store, src: str, params: list) -> dict[str, dict[str, dict]]:
    rows = store.query(f"""
        WITH req AS (SELECT trace_id, root_id, route, duration_ns FROM {src}),
        grid AS (SELECT r.*, st.stage FROM req r CROSS JOIN (SELECT DISTINCT stage FROM request_stages) st),
        cells AS (
            SELECT g.route, g.trace_id, g.root_id, g.duration_ns, g.stage, coalesce(rs.ns, 0) AS ns
            FROM grid g LEFT JOIN request_stages rs
              ON rs.trace_id = g.trace_id AND rs.root_id = g.root_id AND rs.stage = g.stage
        ),
        tail AS (SELECT trace_id, root_id FROM ({_tail_cohort_sql(src)}))
        SELECT f.route, f.stage,
               quantile_cont(f.ns, 0.5), quantile_cont(f.ns, 0.95),
               median(f.ns / nullif(f.duration_ns, 0)) FILTER (WHERE t.trace_id IS NOT NULL),
               count(*) FILTER (WHERE t.trace_id IS NOT NULL),
               sum(f.ns) > 0
        FROM cells f LEFT JOIN tail t ON t.trace_id = f.trace_id AND t.root_id = f.root_id
        GROUP BY ALL""", params * 3)  # src is read three times (req, and twice in the tail)
    out: dict[str, dict[str, dict]] = {}
    for route, stage, p50, p95, share, cohort, present in rows:
        if not present:
            continue
        out.setdefault(route, {})[stage] = {
            "p95_share": round(share or 0.0, 4), "p50_ms": round(p50 / MS, 3), "p95_ms": round(p95 / MS, 3),
            "cohort": cohort}
    order = {s: i for i, s in enumerate(STAGES)}
    return {r: dict(sorted(v.items(), key=lambda kv: order.get(kv[0], 99))) for r, v in out.items()}


@per_build
def bucket_seconds(store, target_buckets: int = 60) -> float:
    t0, t1 = store.query("SELECT min(start_ns), max(start_ns) FROM requests")[0]
    if t0 is None:
        return 1.0
    span_s = max((t1 - t0) / 1e9, 1.0)
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span_s / step <= target_buckets:
            return float(step)
    return span_s / target_buckets


def route_queue_sql(step_s: float) -> str:
    """A ``WITH`` clause defining ``rq``: the requests of one route (the query's ``?``), each with its time
    bucket ``b`` (``step_s`` wide, counted from the first request of the capture), its ``duration_ns`` and
    its ``queue_ns`` (0 for a request that never queued). The rules that weigh queueing against traffic or
    time aggregate it their own way; in integer nanoseconds, so that equal buckets stay equal (ties matter to
    a rank correlation)."""
    return f"""WITH t0 AS (SELECT min(start_ns) AS t0 FROM requests),
        rq AS (SELECT (r.start_ns - t0) // {int(step_s * 1e9)} AS b, r.duration_ns, coalesce(rs.ns, 0) AS queue_ns
               FROM requests r CROSS JOIN t0 LEFT JOIN request_stages rs
                 ON rs.trace_id = r.trace_id AND rs.root_id = r.root_id AND rs.stage = 'queue'
               WHERE r.route = ?)"""


def timeseries(store, route: str | None = None, target_buckets: int = 60, cohort: tuple[str, tuple] | None = None
               ) -> list[dict]:
    """Per time bucket (by request start): count, errors and p50/p95/p99 in ms. ``cohort``: (where, params),
    only the requests that satisfy it, on the whole capture's time axis."""
    step_ns = int(bucket_seconds(store, target_buckets) * 1e9)
    where = "WHERE route = ?" if route else ""
    params = [*(cohort[1] if cohort else ()), *([route] if route else [])]
    rows = store.query(f"""
        WITH t0 AS (SELECT min(start_ns) AS t0 FROM requests)
        SELECT (start_ns - t0) // {step_ns} AS b, count(*), sum(error::INT),
               quantile_cont(duration_ns, 0.5), quantile_cont(duration_ns, 0.95),
               quantile_cont(duration_ns, 0.99)
        FROM {_requests(cohort[0] if cohort else None)}, t0 {where} GROUP BY b ORDER BY b""", params)
    return [{"t_s": b * step_ns / 1e9, "requests": n, "errors": e, "rate_rps": n / (step_ns / 1e9),
             "p50_ms": p50 / MS, "p95_ms": p95 / MS, "p99_ms": p99 / MS} for b, n, e, p50, p95, p99 in rows]


def cohort_latency(store, where: str, params=()) -> tuple[dict, dict, dict]:
    """``route_latency``, ``stage_breakdown`` (without its ``cohort`` counts, as the report has it) and each
    route's ``timeseries`` of only the requests that satisfy ``where`` (a condition on ``requests`` aliased
    ``r``): the overview of a filtered set of requests."""
    src, params = _requests(where), list(params)
    lat = _route_latency(store, src, params)
    stages = {route: {stage: {k: v for k, v in d.items() if k != "cohort"} for stage, d in st.items()}
              for route, st in _stage_breakdown(store, src, params).items()}
    series = {route: timeseries(store, route, cohort=(where, tuple(params))) for route in lat}
    return lat, stages, series
