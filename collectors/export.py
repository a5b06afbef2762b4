"""Write the store back out as a replayable capture: traces as OTLP JSON lines (the Collector's file
exporter layout), metrics as Prometheus text with millisecond timestamps."""
from __future__ import annotations

import os
import re
from pathlib import Path

import orjson

SPANS_PER_LINE = 1000


def any_value(v) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [any_value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": key_values(v)}}
    return {"stringValue": "" if v is None else str(v)}


def key_values(d: dict) -> list[dict]:
    return [{"key": k, "value": any_value(v)} for k, v in d.items()]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_traces(store, path: Path, since_ns: int | None = None) -> int:
    where = "WHERE s.start_ns >= ?" if since_ns else ""
    params = [since_ns] if since_ns else []
    rows = store.query(f"""
        SELECT s.resource, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns,
               s.status_code, s.status_message, s.attributes,
               list({{'name': e.name, 'ts': e.ts_ns, 'attributes': e.attributes}} ORDER BY e.ts_ns)
                 FILTER (WHERE e.name IS NOT NULL)
        FROM (SELECT * FROM spans QUALIFY row_number() OVER (PARTITION BY trace_id, span_id) = 1) s
        LEFT JOIN span_events e USING (trace_id, span_id) {where}
        GROUP BY ALL ORDER BY s.resource, s.start_ns""", params)

    def write(fh):
        batch: dict[str, list] = {}
        count = 0

        def flush():
            if batch:
                doc = {"resourceSpans": [{"resource": {"attributes": key_values(orjson.loads(res or "{}"))},
                                          "scopeSpans": [{"scope": {"name": "triage-capture"}, "spans": spans}]}
                                         for res, spans in batch.items()]}
                fh.write(orjson.dumps(doc) + b"\n")
                batch.clear()

        for res, tid, sid, pid, name, kind, start, end, code, msg, attrs, events in rows:
            span = {"traceId": tid, "spanId": sid, "name": name, "kind": kind,
                    "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
                    "attributes": key_values(orjson.loads(attrs or "{}")),
                    "status": {"code": code, **({"message": msg} if msg else {})}}
            if pid:
                span["parentSpanId"] = pid
            if events:
                span["events"] = [{"name": e["name"], "timeUnixNano": str(e["ts"]),
                                   **({"attributes": key_values(orjson.loads(e["attributes"]))} if e["attributes"] else {})}
                                  for e in events]
            batch.setdefault(res, []).append(span)
            count += 1
            if count % SPANS_PER_LINE == 0:
                flush()
        flush()

    _atomic_write(path, write)
    return len(rows)


_ESC = re.compile(r'[\\"\n]')


def _label(v: str) -> str:
    return _ESC.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group(0)], v)


def write_metrics(store, path: Path, since_ms: int | None = None) -> int:
    where = "WHERE ts_ms >= ?" if since_ms else ""
    rows = store.query(f"SELECT metric, labels, value, ts_ms FROM samples {where} ORDER BY metric, ts_ms",
                       [since_ms] if since_ms else [])

    def write(fh):
        for metric, labels, value, ts in rows:
            lab = ",".join(f'{k}="{_label(str(v))}"' for k, v in sorted((labels or {}).items()))
            val = "NaN" if value != value else ("+Inf" if value == float("inf") else "-Inf" if value == float("-inf") else repr(value))
            fh.write(f"{metric}{{{lab}}} {val} {ts}\n".encode())

    _atomic_write(path, write)
    return len(rows)
