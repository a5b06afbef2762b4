"""OTLP protobuf traces: one ``ExportTraceServiceRequest`` body as sent over OTLP/HTTP (e.g. a ``.pb``
file). A damaged body keeps the whole spans before the damage (``proto_salvage``)."""
from __future__ import annotations

from .. import streams
from ..otlp_proto import looks_like_request, parse, parse_request
from ..parallel import Pool
from ..proto_salvage import salvage_request
from ..sniff import looks_json, whole
from ..spans import SpanSink

FORMAT = "otlp-proto"


def sniff(head: bytes, size: int) -> bool:
    if looks_json(head):
        return False
    if whole(head) and looks_like_request(head):
        return True
    # a damaged body, or the head of a large one: it must hold a whole span (a "\n" then zeros does not)
    return head[:1] == b"\x0a" and salvage_request(head) is not None


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
    data = streams.read_all(src)
    try:
        req = parse(data)
    except ValueError as exc:
        req = salvage_request(data)
        sink.problems.add(sink.source, f"byte 0 of {len(data)}",
                          f"{exc}; " + ("loaded the whole spans before the damage" if req is not None
                                        else "nothing recoverable"))
        if req is None:
            return 0
    parse_request(req, sink, "")
    return 0
