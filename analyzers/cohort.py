"""The rules again, on a cohort: the requests a filter selects (``analyzers.requests``), copied with their
traces' spans and events and every metric sample into a fresh in-memory store, then attributed and ruled
exactly as a whole capture is. The report says which cohort it is (``report["cohort"]``)."""
from __future__ import annotations

from triage.collectors.ingest import IngestResult
from triage.collectors.store import EVENT_COLUMNS, SPAN_COLUMNS, Store

from . import engine, report
from .engine import load_constraints
from .requests import Filter


def analyze_cohort(store, flt: Filter, paths=(), constraints_file: str | None = None) -> dict:
    cons = load_constraints(list(paths), constraints_file)
    sub = Store(None)
    traces = f"SELECT DISTINCT trace_id FROM request_rows r WHERE {flt.where}"
    src = store.cursor()
    try:
        parts = (("spans", SPAN_COLUMNS,
                  f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans WHERE trace_id IN ({traces})", flt.params),
                 ("span_events", EVENT_COLUMNS,
                  f"SELECT {', '.join(EVENT_COLUMNS)} FROM span_events WHERE trace_id IN ({traces})", flt.params),
                 ("samples", ("ts_ms", "metric", "labels", "value", "source"),
                  "SELECT ts_ms, metric, labels, value, source FROM samples", ()),
                 ("model_configs", ("path", "model", "text"), "SELECT path, model, text FROM model_configs", ()))
        with sub.writer() as con:
            for table, cols, sql, params in parts:
                batch = src.sql(sql, params=list(params)).to_arrow_table()
                con.register("_cohort_batch", batch)
                con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM _cohort_batch")
                con.unregister("_cohort_batch")
    finally:
        src.close()
    engine.prepare(sub, cons)
    findings = engine.run_rules(sub, cons)
    n = int(sub.scalar("SELECT count(*) FROM spans") or 0)
    rep = report.build(sub, IngestResult(spans=n), findings, cons)
    rep["cohort"] = {"filter": flt.text, "requests": int(sub.scalar("SELECT count(*) FROM requests") or 0)}
    sub.close()
    return rep
