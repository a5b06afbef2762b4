"""Typed OTLP JSON (msgspec Structs): the fast path for JSON lines. Decoding straight into these skips
unknown fields and builds far fewer Python objects than a generic parse. Anything that does not fit
(wrong types) raises, and the caller re-reads that line with the tolerant generic reader, which reports
each bad span precisely."""
from __future__ import annotations

import msgspec
from msgspec import Struct


class ArrayValue(Struct):
    values: list["AnyValue"] = []


class KvList(Struct):
    values: list["KeyValue"] = []


class AnyValue(Struct):
    stringValue: str | None = None
    intValue: int | str | None = None
    doubleValue: float | str | None = None
    boolValue: bool | None = None
    arrayValue: ArrayValue | None = None
    kvlistValue: KvList | None = None
    bytesValue: str | None = None


class KeyValue(Struct):
    key: str
    value: AnyValue | None = None


class Event(Struct):
    name: str = ""
    timeUnixNano: int | str | None = None
    attributes: list[KeyValue] = []


class Status(Struct):
    code: int | str | None = None
    message: str | None = None


class Span(Struct):
    traceId: str | None = None
    spanId: str | None = None
    parentSpanId: str | None = None
    name: str = ""
    kind: int | str | None = 0
    startTimeUnixNano: int | str | None = None
    endTimeUnixNano: int | str | None = None
    attributes: list[KeyValue] = []
    events: list[Event] = []
    status: Status | None = None


class ScopeSpans(Struct):
    spans: list[Span] = []


class Resource(Struct):
    attributes: list[KeyValue] = []


class ResourceSpans(Struct):
    resource: Resource | None = None
    scopeSpans: list[ScopeSpans] | None = None
    instrumentationLibrarySpans: list[ScopeSpans] | None = None


class ExportTraceServiceRequest(Struct):
    resourceSpans: list[ResourceSpans]


class Wrapped(Struct):
    result: ExportTraceServiceRequest


DECODER = msgspec.json.Decoder(ExportTraceServiceRequest)
WRAPPED = msgspec.json.Decoder(Wrapped)
Error = (msgspec.ValidationError, msgspec.DecodeError)


def value(v: AnyValue | None):
    if v is None:
        return None
    if v.stringValue is not None:
        return v.stringValue
    if v.intValue is not None:
        try:
            return int(v.intValue)
        except ValueError:
            return v.intValue
    if v.doubleValue is not None:
        try:
            return float(v.doubleValue)
        except ValueError:
            return v.doubleValue
    if v.boolValue is not None:
        return v.boolValue
    if v.arrayValue is not None:
        return [value(x) for x in v.arrayValue.values]
    if v.kvlistValue is not None:
        return attributes(v.kvlistValue.values)
    return v.bytesValue


def attributes(kvs: list[KeyValue]) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = v.stringValue if v is not None and v.stringValue is not None else value(v)
    return out
