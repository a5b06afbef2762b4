"""Zipkin v2 JSON: an array of spans, times in microseconds. A ``shared`` SERVER span reuses its
client's id: it gets a derived id and the client as parent, so the client → server hop stays a tree."""
from __future__ import annotations

import hashlib

from ..salvage import document_reader
from ..spans import SpanColumns, resource_json, us_to_ns

FORMAT = "zipkin-json"
KINDS = {"SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}


def sniff(head: bytes, size: int) -> bool:
    return head.lstrip()[:1] == b"[" and b'"traceId"' in head and (b'"localEndpoint"' in head or b'"timestamp"' in head)


def is_zipkin(doc) -> bool:
    return isinstance(doc, list) and bool(doc) and all(isinstance(s, dict) for s in doc[:20]) and any(
        "traceId" in s and "id" in s and ("localEndpoint" in s or "timestamp" in s) for s in doc[:20])


def _derived(span_id: str) -> str:
    return hashlib.sha1(f"{span_id}:shared-server".encode()).hexdigest()[:16]


def _pad(i, width):
    return i.rjust(width, "0") if isinstance(i, str) and len(i) < width else i


def parse(doc, cols: SpanColumns) -> int:
    n = 0
    res_cache: dict = {}
    client_ids = {(s.get("traceId"), s.get("id")) for s in doc if isinstance(s, dict) and s.get("kind") == "CLIENT"}
    for i, sp in enumerate(doc):
        where = f"[{i}]"
        if not isinstance(sp, dict):
            cols.problems.add(cols.source, where, "span is not an object")
            continue
        local = sp.get("localEndpoint") if isinstance(sp.get("localEndpoint"), dict) else {}
        service = local.get("serviceName")
        if service not in res_cache:
            res_cache[service] = resource_json({"service.name": service})
        tags = dict(sp.get("tags") or {}) if isinstance(sp.get("tags"), dict) else {}
        remote = sp.get("remoteEndpoint") if isinstance(sp.get("remoteEndpoint"), dict) else {}
        if remote.get("serviceName"):
            tags.setdefault("peer.service", remote["serviceName"])
        kind = KINDS.get(str(sp.get("kind", "")).upper(), 0)
        span_id, parent = _pad(sp.get("id"), 16), _pad(sp.get("parentId"), 16)
        if sp.get("shared") and kind == 2 and (sp.get("traceId"), sp.get("id")) in client_ids:
            parent, span_id = span_id, _derived(span_id)
        try:
            start = int(sp["timestamp"]) * 1000
            end = start + int(sp.get("duration") or 0) * 1000
        except (KeyError, TypeError, ValueError, OverflowError):
            cols.problems.add(cols.source, where, "missing or invalid timestamp/duration")
            continue
        err = "error" in tags
        events = [(str(a.get("value", "")), us_to_ns(a.get("timestamp")), {})
                  for a in sp.get("annotations") or [] if isinstance(a, dict)]
        n += cols.add(_pad(sp.get("traceId"), 32), span_id, parent, service, res_cache[service], sp.get("name", ""),
                      kind, start, end, 2 if err else 0, tags.get("error") if err else None, tags, events, where)
    return n


read = document_reader(is_zipkin, f"does not have the {FORMAT} layout", parse)
