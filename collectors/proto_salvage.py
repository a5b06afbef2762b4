"""Recover the complete spans of a truncated OTLP protobuf body. The wire format is walked by hand
(tag varint, length-delimited fields) down ExportTraceServiceRequest → ResourceSpans → ScopeSpans →
Span, keeping every submessage that is whole and dropping the one cut by the truncation."""
from __future__ import annotations


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    """Yield (field number, wire type, value bytes or int) for each complete field; stop at the damage."""
    pos = 0
    while pos < len(data):
        try:
            tag, pos = _varint(data, pos)
            field, wt = tag >> 3, tag & 7
            if field == 0:  # never valid: the damage (zeros, garbage) starts here; walking on costs time only
                return
            if wt == 0:
                val, pos = _varint(data, pos)
            elif wt == 1:
                val, pos = data[pos:pos + 8], pos + 8
            elif wt == 5:
                val, pos = data[pos:pos + 4], pos + 4
            elif wt == 2:
                n, pos = _varint(data, pos)
                if pos + n > len(data):
                    yield field, wt, data[pos:], False
                    return
                val, pos = data[pos:pos + n], pos + n
            else:
                return
        except ValueError:
            return
        if pos > len(data):
            return
        yield field, wt, val, True


def salvage_request(data: bytes):
    """An ExportTraceServiceRequest holding every whole span found in ``data``, or None."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    out = ExportTraceServiceRequest()
    found = 0
    for f, wt, val, whole in _fields(data):
        if f != 1 or wt != 2:
            continue
        rs = out.resource_spans.add()
        if whole:
            try:
                rs.ParseFromString(val)
                found += sum(len(ss.spans) for ss in rs.scope_spans)
                continue
            except Exception:
                rs.Clear()
        for f2, wt2, val2, whole2 in _fields(val):  # the cut ResourceSpans: keep its whole parts
            if f2 == 1 and wt2 == 2 and whole2:
                try:
                    rs.resource.ParseFromString(val2)
                except Exception:
                    pass
            elif f2 == 2 and wt2 == 2:
                ss = rs.scope_spans.add()
                for f3, wt3, val3, whole3 in _fields(val2):
                    if f3 == 2 and wt3 == 2 and whole3:
                        try:
                            sp = Span()
                            sp.ParseFromString(val3)
                            ss.spans.append(sp)
                            found += 1
                        except Exception:
                            pass
        break
    return out if found else None
