"""OTLP JSON traces: one ExportTraceServiceRequest object, JSON lines as the Collector's file exporter
writes them, the legacy ``instrumentationLibrarySpans`` name, and the ``{"result": ...}`` wrapper of
Jaeger's API v3.

Ids are hex (Tempo's base64 is accepted too); 64-bit integers may be strings or numbers; enums may be
ints or names. protobuf's ``json_format`` is deliberately not used: it decodes hex ids as base64.
"""
from __future__ import annotations

import orjson

from .spans import SpanSink

SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
              "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def any_value(v):
    """Decode an OTLP JSON AnyValue into a Python value."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return v["intValue"]
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return v["doubleValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values", []) or []]
    if "kvlistValue" in v:
        return attributes((v["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(kvs) -> dict:
    out = {}
    for kv in kvs or []:
        if isinstance(kv, dict) and "key" in kv:
            out[str(kv["key"])] = any_value(kv.get("value"))
    return out


def _enum(value, names: dict) -> int:
    if isinstance(value, str):
        if value in names:
            return names[value]
        try:
            return int(value)
        except ValueError:
            return 0
    return int(value or 0)


def unwrap(doc):
    """The ExportTraceServiceRequest inside a document, or None when it is not one."""
    if isinstance(doc, dict) and "result" in doc and isinstance(doc["result"], dict):
        doc = doc["result"]
    if isinstance(doc, dict) and "resourceSpans" in doc:
        return doc
    return None


def read_request(doc: dict, sink: SpanSink, where: str) -> int:
    """Feed the spans of one ExportTraceServiceRequest (as decoded JSON) to the sink."""
    n = 0
    for i, rs in enumerate(doc.get("resourceSpans") or []):
        if not isinstance(rs, dict):
            sink.problems.add(sink.source, f"{where} resourceSpans[{i}]", "not an object")
            continue
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        service = resource.get("service.name")
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        for j, ss in enumerate(scopes):
            for k, sp in enumerate((ss or {}).get("spans") or []):
                loc = f"{where} resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                if not isinstance(sp, dict):
                    sink.problems.add(sink.source, loc, "span is not an object")
                    continue
                try:
                    status = sp.get("status") or {}
                    events = [(str(e.get("name", "")), e.get("timeUnixNano"), attributes(e.get("attributes")))
                              for e in sp.get("events") or [] if isinstance(e, dict)]
                    ok = sink.add(
                        trace_id=sp.get("traceId"), span_id=sp.get("spanId"),
                        parent_span_id=sp.get("parentSpanId"), service=service, resource=resource,
                        name=str(sp.get("name", "")), kind=_enum(sp.get("kind"), SPAN_KINDS),
                        start_ns=sp.get("startTimeUnixNano"), end_ns=sp.get("endTimeUnixNano"),
                        status_code=_enum(status.get("code"), STATUS_CODES),
                        status_message=status.get("message"), attributes=attributes(sp.get("attributes")),
                        events=events, where=loc)
                except (TypeError, ValueError, AttributeError) as exc:
                    sink.problems.add(sink.source, loc, f"malformed span: {exc}")
                    continue
                n += ok
    return n


def read_file(data: bytes, sink: SpanSink) -> int:
    """Read a whole OTLP JSON file (single object or JSON lines). Bad lines are reported, not fatal."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if doc is not None:
        req = unwrap(doc)
        if req is None:
            sink.problems.add(sink.source, "offset 0", "JSON document has no resourceSpans")
            return 0
        return read_request(req, sink, "")
    n = 0
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            req = unwrap(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            sink.problems.add(sink.source, f"line {lineno}", f"invalid JSON: {exc}")
            continue
        if req is None:
            sink.problems.add(sink.source, f"line {lineno}", "JSON line has no resourceSpans")
            continue
        n += read_request(req, sink, f"line {lineno}")
    return n
