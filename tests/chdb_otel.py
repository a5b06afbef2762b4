"""Test helper: put spans into an OTel ``clickhouseexporter`` table in chDB, as the exporter would write them.

The spans are read with triage's own file readers into a store, then written as the exporter writes an
OTLP span (``exporter_traces.go``): start time and duration in ns, ids as hex ('' when absent), kind and
status as ``SPAN_KIND_*``/``STATUS_CODE_*`` text, every attribute value as text in a ``Map(String, String)``
(pdata's ``AsString``: numbers in decimal, booleans ``true``/``false``, arrays and maps as JSON), events as the
``Events`` Nested columns. The DDL is the exporter's own (tests/fixtures/clickhouse/, provenance in SOURCES.md).
"""
from __future__ import annotations

from pathlib import Path

import orjson

DDL = Path(__file__).parent / "fixtures" / "clickhouse"
KINDS = {0: "SPAN_KIND_UNSPECIFIED", 1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER", 3: "SPAN_KIND_CLIENT",
         4: "SPAN_KIND_PRODUCER", 5: "SPAN_KIND_CONSUMER"}
STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


def as_string(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return format(v, "f").rstrip("0").rstrip(".") if "e" in repr(v) else repr(v)
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return str(v)


def ticks(ns: int) -> str:
    """A DateTime64(9) value as text: seconds and nine decimals, exact."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def create_table(session, db: str = "otel", variant: str = "current", table: str = "otel_traces") -> None:
    session.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    if variant == "current":  # the exporter's template: table, cluster clause, engine, TTL clause
        text = (DDL / "traces_table.sql").read_text() % (f"{db}.{table}", "", "MergeTree()", "")
    else:  # its earlier template: table, TTL clause
        text = (DDL / "otel_traces_v0_int64_duration.sql").read_text() % (f"{db}.{table}", "")
    session.query(text)


def rows_from_store(store) -> list[dict]:
    events: dict[tuple, list] = {}
    for tid, sid, name, ts, attrs in store.query(
            "SELECT trace_id, span_id, name, ts_ns, attributes FROM span_events ORDER BY ts_ns"):
        events.setdefault((tid, sid), []).append((ts, name, orjson.loads(attrs) if attrs else {}))
    rows = []
    for (tid, sid, pid, svc, name, kind, start, end, status, msg, attrs, resource) in store.query(
            "SELECT trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns, status_code, "
            "status_message, attributes, resource FROM spans"):
        res = orjson.loads(resource) if resource else {}
        ev = events.get((tid, sid), [])
        rows.append({
            "Timestamp": ticks(start), "TraceId": tid, "SpanId": sid, "ParentSpanId": pid or "", "TraceState": "",
            "SpanName": name, "SpanKind": KINDS[kind],
            "ServiceName": as_string(res["service.name"]) if res.get("service.name") is not None else "",
            "ResourceAttributes": {k: as_string(v) for k, v in res.items() if v is not None},
            "SpanAttributes": {k: as_string(v) for k, v in orjson.loads(attrs).items() if v is not None},
            "Duration": end - start, "StatusCode": STATUS[status], "StatusMessage": msg or "",
            "Events.Timestamp": [ticks(e[0]) for e in ev], "Events.Name": [e[1] for e in ev],
            "Events.Attributes": [{k: as_string(v) for k, v in e[2].items() if v is not None} for e in ev],
        })
    return rows


def insert_rows(session, rows: list[dict], db: str = "otel", table: str = "otel_traces") -> None:
    """JSONEachRow, in batches."""
    for i in range(0, len(rows), 5000):
        body = b"\n".join(orjson.dumps(r) for r in rows[i:i + 5000]).decode()
        session.query(f"INSERT INTO {db}.{table} "
                      f"FORMAT JSONEachRow\n{body}")


def load_capture(session, paths: list[str], db: str = "otel", variant: str = "current") -> int:
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    store = Store()
    ingest_paths(store, paths)
    rows = rows_from_store(store)
    store.close()
    create_table(session, db, variant)
    insert_rows(session, rows, db)
    return len(rows)
