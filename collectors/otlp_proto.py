"""OTLP protobuf traces: ``ExportTraceServiceRequest`` bodies as sent over OTLP/HTTP (e.g. ``.pb`` files)."""
from __future__ import annotations

from google.protobuf.message import DecodeError

from .spans import SpanSink


def any_value(v):
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs) -> dict:
    return {kv.key: any_value(kv.value) for kv in kvs}


def parse(data: bytes):
    """Decode an ExportTraceServiceRequest; raises ValueError when the bytes are not one."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(data)
    except (DecodeError, RuntimeError) as exc:  # RuntimeError: recursion limit on garbage
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {exc}") from exc
    return req


def looks_like_request(data: bytes) -> bool:
    """True when the bytes decode as an ExportTraceServiceRequest holding at least one plausible span."""
    try:
        req = parse(data)
    except ValueError:
        return False
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                return len(sp.trace_id) == 16 and len(sp.span_id) == 8
    return False


def read_file(data: bytes, sink: SpanSink) -> int:
    try:
        req = parse(data)
    except ValueError as exc:
        sink.problems.add(sink.source, "offset 0", str(exc))
        return 0
    n = 0
    for i, rs in enumerate(req.resource_spans):
        resource = attributes(rs.resource.attributes)
        service = resource.get("service.name")
        for j, ss in enumerate(rs.scope_spans):
            for k, sp in enumerate(ss.spans):
                events = [(e.name, e.time_unix_nano, attributes(e.attributes)) for e in sp.events]
                n += sink.add(
                    trace_id=bytes(sp.trace_id), span_id=bytes(sp.span_id),
                    parent_span_id=bytes(sp.parent_span_id) or None, service=service, resource=resource,
                    name=sp.name, kind=int(sp.kind), start_ns=sp.start_time_unix_nano,
                    end_ns=sp.end_time_unix_nano, status_code=int(sp.status.code),
                    status_message=sp.status.message, attributes=attributes(sp.attributes), events=events,
                    where=f"resource_spans[{i}].scope_spans[{j}].spans[{k}]")
    return n
