"""OTLP protobuf traces as the Collector file exporter's ``format: proto`` writes them: records, each a
4-byte big-endian size then an ``ExportTraceServiceRequest`` of that size."""
from __future__ import annotations

import struct

from .. import streams
from ..otlp_proto import MAX_RECORD, looks_length_prefixed, parse, parse_request
from ..parallel import Pool
from ..sniff import looks_json
from ..spans import SpanSink

FORMAT = "otlp-proto-framed"


def sniff(head: bytes, size: int) -> bool:
    return not looks_json(head) and looks_length_prefixed(head, size)


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
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
    return 0
