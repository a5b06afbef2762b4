"""Normalised span records, shared by every trace reader.

Readers turn their format into calls of ``SpanSink.add``; the sink promotes the attributes the
analyzers need into columns, validates what would corrupt the analysis (ids, times), and writes in
batches through the store's single writer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from .problems import Problems
from .store import EVENT_COLUMNS, SPAN_COLUMNS, Store

ROUTE_KEYS = ("http.route", "rpc.method", "url.template")
HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")
RESEND_KEYS = ("http.request.resend_count", "http.resend_count")
MODEL_KEYS = ("triton.model_name", "gen_ai.request.model", "model.name", "model_name")
PEER_KEYS = ("peer.service", "server.address", "net.peer.name", "http.host")
INPUT_SIZE_KEYS = ("gen_ai.usage.input_tokens", "app.input_tokens", "input_tokens", "llm.token_count.prompt")

_HEX = set("0123456789abcdef")


def _first(attrs: dict, keys: tuple[str, ...]):
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def _as_int(v) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def normalize_id(raw, nbytes: int) -> str | None:
    """A span/trace id as lowercase hex, from hex text or raw bytes. None when invalid or all zero."""
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) != nbytes:
            return None
        h = raw.hex()
    else:
        h = str(raw).strip().lower()
        if len(h) != nbytes * 2 or not set(h) <= _HEX:
            h = _maybe_base64(str(raw), nbytes)
            if h is None:
                return None
    return None if h.strip("0") == "" else h


def _maybe_base64(s: str, nbytes: int) -> str | None:
    import base64
    import binascii

    try:
        b = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    return b.hex() if len(b) == nbytes else None


@dataclass
class SpanSink:
    """Collects spans and events column-wise and flushes them to the store in batches."""

    store: Store
    source: str
    problems: Problems
    batch_size: int = 50_000
    spans_written: int = 0
    _spans: dict = field(default_factory=lambda: {c: [] for c in SPAN_COLUMNS})
    _events: dict = field(default_factory=lambda: {c: [] for c in EVENT_COLUMNS})

    def add(self, *, trace_id, span_id, parent_span_id, service: str | None, resource: dict, name: str,
            kind: int, start_ns, end_ns, status_code: int, status_message: str | None, attributes: dict,
            events: list[tuple[str, int, dict]], where: str) -> bool:
        """Add one span; returns False (and records a problem) when it cannot be used."""
        tid = normalize_id(trace_id, 16)
        sid = normalize_id(span_id, 8)
        if tid is None or sid is None:
            self.problems.add(self.source, where, f"invalid {'traceId' if tid is None else 'spanId'} {trace_id if tid is None else span_id!r}")
            return False
        pid = normalize_id(parent_span_id, 8) if parent_span_id not in (None, "", b"") else None
        start, end = _as_int(start_ns), _as_int(end_ns)
        if start is None or end is None or start <= 0:
            self.problems.add(self.source, where, f"span {sid}: missing or invalid start/end time")
            return False
        if end < start:
            self.problems.add(self.source, where, f"span {sid}: end before start ({end - start} ns); duration set to 0")
            end = start
        s = self._spans
        s["trace_id"].append(tid)
        s["span_id"].append(sid)
        s["parent_span_id"].append(pid)
        s["service"].append(service or "unknown")
        s["name"].append(name or "")
        s["kind"].append(int(kind or 0))
        s["start_ns"].append(start)
        s["end_ns"].append(end)
        s["duration_ns"].append(end - start)
        s["status_code"].append(int(status_code or 0))
        s["status_message"].append(status_message or None)
        route = _first(attributes, ROUTE_KEYS)
        s["route"].append(str(route) if route is not None else None)
        s["http_status"].append(_as_int(_first(attributes, HTTP_STATUS_KEYS)))
        s["resend_count"].append(_as_int(_first(attributes, RESEND_KEYS)))
        model = _first(attributes, MODEL_KEYS)
        s["model"].append(str(model) if model is not None else None)
        peer = _first(attributes, PEER_KEYS)
        s["peer"].append(str(peer) if peer is not None else None)
        s["input_size"].append(_as_int(_first(attributes, INPUT_SIZE_KEYS)))
        s["attributes"].append(orjson.dumps(attributes, default=str).decode())
        s["resource"].append(orjson.dumps(resource, default=str).decode())
        s["source"].append(self.source)
        ev = self._events
        for ev_name, ts, ev_attrs in events:
            ts = _as_int(ts)
            if ts is None:
                self.problems.add(self.source, where, f"span {sid}: event {ev_name!r} without a valid time")
                continue
            ev["trace_id"].append(tid)
            ev["span_id"].append(sid)
            ev["name"].append(ev_name)
            ev["ts_ns"].append(ts)
            ev["attributes"].append(orjson.dumps(ev_attrs, default=str).decode() if ev_attrs else None)
        if len(s["trace_id"]) >= self.batch_size:
            self.flush()
        return True

    def flush(self) -> None:
        n = self.store.insert_columns("spans", SPAN_COLUMNS, self._spans)
        self.store.insert_columns("span_events", EVENT_COLUMNS, self._events)
        self.spans_written += n
        for v in self._spans.values():
            v.clear()
        for v in self._events.values():
            v.clear()
