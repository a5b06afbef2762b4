"""The tolerant reader of decoded OTLP JSON: an ExportTraceServiceRequest object (the ``{"result": ...}``
wrapper of Jaeger's API v3 and the legacy ``instrumentationLibrarySpans`` name included) into span columns.
Any field may be missing or of the wrong type: each bad span is a problem with its place, never an exception.

Ids are hex (Tempo's base64 is accepted too); 64-bit integers may be strings or numbers; enums may be ints or
names. protobuf's ``json_format`` is deliberately not used: it decodes hex ids as base64. Used for single
documents, for the lines the exact lines path cannot type, and by the receiver.
"""
from __future__ import annotations

from .otlp_model import SPAN_KINDS, STATUS_CODES, enum_value, json_attributes
from .spans import SpanColumns, resource_columns


def unwrap(doc):
    """The ExportTraceServiceRequest inside a document, or None when it is not one."""
    if isinstance(doc, dict) and "result" in doc and isinstance(doc["result"], dict):
        doc = doc["result"]
    if isinstance(doc, dict) and "resourceSpans" in doc:
        return doc
    return None


def parse_request(doc: dict, cols: SpanColumns, where: str) -> int:
    """Feed the spans of one ExportTraceServiceRequest (as decoded JSON) to the columns."""
    n = 0
    rss = doc.get("resourceSpans")
    if not isinstance(rss, list):
        cols.problems.add(cols.source, f"{where} resourceSpans", "not a list")
        return 0
    for i, rs in enumerate(rss):
        if not isinstance(rs, dict):
            cols.problems.add(cols.source, f"{where} resourceSpans[{i}]", "not an object")
            continue
        service, rjson = resource_columns(json_attributes(
            (rs.get("resource") or {}).get("attributes") if isinstance(rs.get("resource"), dict) else None))
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        if not isinstance(scopes, list):  # a wrong shape drops what it holds: counted as rejected, not silent
            _wrong_shape(cols, f"{where} resourceSpans[{i}].scopeSpans", scopes, "scopeSpans is not a list")
            continue
        for j, ss in enumerate(scopes):
            if not isinstance(ss, dict):
                _wrong_shape(cols, f"{where} resourceSpans[{i}].scopeSpans[{j}]", ss, "scope is not an object")
                continue
            spans = ss.get("spans")
            if spans is not None and not isinstance(spans, list):
                _wrong_shape(cols, f"{where} resourceSpans[{i}].scopeSpans[{j}].spans", spans, "spans is not a list")
                continue
            for k, sp in enumerate(spans or []):
                def loc(i=i, j=j, k=k):
                    return f"{where} resourceSpans[{i}].scopeSpans[{j}].spans[{k}]".strip()
                if not isinstance(sp, dict):
                    cols.problems.add(cols.source, loc(), "span is not an object")
                    cols.rejected += 1
                    continue
                n += add_span(cols, sp, service, rjson, loc)
    return n


def _wrong_shape(cols: SpanColumns, where: str, value, message: str) -> None:
    """A container of the wrong type: its spans (as many as can be seen in it, at least one) are rejected."""
    inner = value.get("spans") if isinstance(value, dict) else None
    n = len(inner) if isinstance(inner, list) else 1
    cols.problems.add(cols.source, where.strip(), f"{message} ({type(value).__name__}); {n} span(s) dropped")
    cols.rejected += n


def add_span(cols: SpanColumns, sp: dict, service: str | None, rjson: str, where) -> bool:
    """One OTLP JSON span object into ``cols`` (the tolerant reader: any field may be missing or wrong)."""
    status = sp.get("status")
    status = status if isinstance(status, dict) else {}
    evs = sp.get("events")
    events = [(e.get("name", ""), e.get("timeUnixNano"), json_attributes(e.get("attributes")))
              for e in evs if isinstance(e, dict)] if isinstance(evs, list) else ()
    return cols.add(
        sp.get("traceId"), sp.get("spanId"), sp.get("parentSpanId"), service, rjson,
        sp.get("name", ""), enum_value(sp.get("kind"), SPAN_KINDS),
        sp.get("startTimeUnixNano"), sp.get("endTimeUnixNano"),
        enum_value(status.get("code"), STATUS_CODES), status.get("message"),
        json_attributes(sp.get("attributes")), events, where)
