"""OTLP protobuf traces: decoding an ``ExportTraceServiceRequest`` (a body as sent over OTLP/HTTP, or one
record of the Collector file exporter's ``format: proto``, which prefixes each with its 4-byte big-endian
size), recognising one by its first bytes, and feeding its spans to span columns. Used by the protobuf readers
and the receiver."""
from __future__ import annotations

import struct

from google.protobuf.message import DecodeError

from .otlp_model import proto_attributes
from .spans import SpanColumns, resource_columns

MAX_RECORD = 256 << 20


def parse(data: bytes):
    """Decode an ExportTraceServiceRequest; raises ValueError when the bytes are not one."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: recursion limit on garbage
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {exc}") from exc
    return req


def _plausible(req) -> bool:
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                return len(sp.trace_id) == 16 and len(sp.span_id) == 8
    return False


def looks_like_request(data: bytes) -> bool:
    """True when the bytes decode as an ExportTraceServiceRequest holding at least one plausible span."""
    try:
        return _plausible(parse(data))
    except ValueError:
        return False


def looks_length_prefixed(head: bytes, size: int) -> bool:
    """The file exporter's framing: a big-endian uint32 size, then that many bytes of a request."""
    if len(head) < 5:
        return False
    (n,) = struct.unpack(">I", head[:4])
    if n == 0 or n + 4 > size or n > MAX_RECORD:
        return False
    if n + 4 <= len(head):
        return looks_like_request(head[4:4 + n])
    return head[4] == 0x0A  # field 1 (resource_spans), length-delimited: the start of a request


def parse_request(req, cols: SpanColumns, where: str) -> int:
    n = 0
    for i, rs in enumerate(req.resource_spans):
        service, rjson = resource_columns(proto_attributes(rs.resource.attributes))
        for j, ss in enumerate(rs.scope_spans):
            for k, sp in enumerate(ss.spans):
                events = [(e.name, e.time_unix_nano, proto_attributes(e.attributes)) for e in sp.events]
                n += cols.add(
                    bytes(sp.trace_id), bytes(sp.span_id), bytes(sp.parent_span_id) or None,
                    service, rjson, sp.name, int(sp.kind),
                    sp.start_time_unix_nano, sp.end_time_unix_nano, int(sp.status.code), sp.status.message,
                    proto_attributes(sp.attributes), events,
                    lambda i=i, j=j, k=k: f"{where}resource_spans[{i}].scope_spans[{j}].spans[{k}]")
    return n
