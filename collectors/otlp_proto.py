"""OTLP protobuf traces: ``ExportTraceServiceRequest`` bodies as sent over OTLP/HTTP (e.g. ``.pb`` files),
and the Collector file exporter's ``format: proto`` (records with a 4-byte big-endian size prefix)."""
from __future__ import annotations

import struct

from google.protobuf.message import DecodeError

from . import streams
from .spans import SpanColumns, SpanSink, resource_columns

MAX_RECORD = 256 << 20


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
        service, rjson = resource_columns(attributes(rs.resource.attributes))
        for j, ss in enumerate(rs.scope_spans):
            for k, sp in enumerate(ss.spans):
                events = [(e.name, e.time_unix_nano, attributes(e.attributes)) for e in sp.events]
                n += cols.add(
                    bytes(sp.trace_id), bytes(sp.span_id), bytes(sp.parent_span_id) or None,
                    service, rjson, sp.name, int(sp.kind),
                    sp.start_time_unix_nano, sp.end_time_unix_nano, int(sp.status.code), sp.status.message,
                    attributes(sp.attributes), events,
                    lambda i=i, j=j, k=k: f"{where}resource_spans[{i}].scope_spans[{j}].spans[{k}]")
    return n


def read_body(src: streams.Source, sink: SpanSink) -> None:
    from .proto_salvage import salvage_request

    data = streams.read_all(src)
    try:
        req = parse(data)
    except ValueError as exc:
        req = salvage_request(data)
        sink.problems.add(sink.source, f"byte 0 of {len(data)}",
                          f"{exc}; " + ("loaded the whole spans before the damage" if req is not None
                                        else "nothing recoverable"))
        if req is None:
            return
    parse_request(req, sink, "")
    sink.flush()


def read_length_prefixed(src: streams.Source, sink: SpanSink, progress=None) -> None:
    offset = 0
    while True:
        head = streams.read_some(src, 4)
        if not head:
            break
        if len(head) < 4:
            sink.problems.add(sink.source, f"byte {offset}", "truncated record size prefix")
            break
        (n,) = struct.unpack(">I", head)
        if n > MAX_RECORD:
            sink.problems.add(sink.source, f"byte {offset}", f"record size {n} is implausible; stopped reading")
            break
        body = streams.read_exact(src, n)
        if len(body) < n:
            sink.problems.add(sink.source, f"byte {offset}", f"truncated record ({len(body)} of {n} bytes)")
            break
        try:
            parse_request(parse(body), sink, f"record at byte {offset}: ")
        except ValueError as exc:
            sink.problems.add(sink.source, f"byte {offset}", str(exc))
        offset += 4 + n
        if progress:
            progress()
    sink.flush()
