"""Jaeger JSON: the query API (``{"data": [trace, ...]}``) and the UI's download (one trace object, or a
list of them). Times are microseconds; the parent is the CHILD_OF reference (else the first reference);
tags are typed; ``span.kind`` and ``error``/``otel.status_code`` tags carry kind and status."""
from __future__ import annotations

from ..salvage import document_reader
from ..sniff import looks_json
from ..spans import SpanColumns, resource_json, us_to_ns

FORMAT = "jaeger-json"
KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}


def traces_of(doc) -> list | None:
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return doc["data"]
    if isinstance(doc, dict) and isinstance(doc.get("spans"), list):
        return [doc]
    if isinstance(doc, list) and doc and all(isinstance(t, dict) and "spans" in t for t in doc):
        return doc
    return None


def is_jaeger(doc) -> bool:
    ts = traces_of(doc)
    return bool(ts) and any(isinstance(t.get("spans"), list) and any(
        isinstance(s, dict) and "spanID" in s for s in t["spans"]) for t in ts)


def sniff(head: bytes, size: int) -> bool:
    return looks_json(head) and (b'"spanID"' in head or b'"traceID"' in head)


def _tags(tags) -> dict:
    out = {}
    for t in tags or []:
        if isinstance(t, dict) and "key" in t:
            out[str(t["key"])] = t.get("value")
    return out


def _pad(trace_id):
    """Jaeger may use 64-bit trace ids (16 hex chars): left-pad to 128 bits as OTLP does."""
    return trace_id.rjust(32, "0") if isinstance(trace_id, str) and len(trace_id) < 32 else trace_id


def _span_id(s):
    return s.rjust(16, "0") if isinstance(s, str) and len(s) < 16 else s


def parse(doc, cols: SpanColumns) -> int:
    n = 0
    for ti, trace in enumerate(traces_of(doc) or []):
        procs = trace.get("processes") if isinstance(trace.get("processes"), dict) else {}
        res_cache: dict[str, tuple[str | None, str]] = {}
        for si, sp in enumerate(trace.get("spans") or []):
            where = f"data[{ti}].spans[{si}]"
            if not isinstance(sp, dict):
                cols.problems.add(cols.source, where, "span is not an object")
                continue
            pid = sp.get("processID")
            if pid not in res_cache:
                proc = sp.get("process") if isinstance(sp.get("process"), dict) else procs.get(pid) or {}
                resource = {"service.name": proc.get("serviceName"), **_tags(proc.get("tags"))}
                res_cache[pid] = (proc.get("serviceName"), resource_json(resource))
            service, rjson = res_cache[pid]
            tags = _tags(sp.get("tags"))
            refs = [r for r in sp.get("references") or [] if isinstance(r, dict)]
            parent = next((r.get("spanID") for r in refs if r.get("refType") == "CHILD_OF"), None)
            if parent is None and refs:
                parent = refs[0].get("spanID")
            if parent is None:
                parent = sp.get("parentSpanID")
            start_us, dur_us = sp.get("startTime"), sp.get("duration")
            try:
                start = int(start_us) * 1000
                end = start + int(dur_us) * 1000
            except (TypeError, ValueError, OverflowError):
                cols.problems.add(cols.source, where, "missing or invalid startTime/duration")
                continue
            err = tags.get("error") in (True, "true") or str(tags.get("otel.status_code", "")).upper() == "ERROR"
            events = []
            for log in sp.get("logs") or []:
                if isinstance(log, dict):
                    fields = _tags(log.get("fields"))
                    ts = log.get("timestamp")
                    events.append((str(fields.get("event", "log")), us_to_ns(ts), fields))
            n += cols.add(_pad(sp.get("traceID")), _span_id(sp.get("spanID")), _span_id(parent), service, rjson,
                          sp.get("operationName", ""), KINDS.get(str(tags.get("span.kind", "")).lower(), 0),
                          start, end, 2 if err else 0, tags.get("otel.status_description"), tags, events, where)
    return n


read = document_reader(is_jaeger, f"does not have the {FORMAT} layout", parse)
