"""Format detection by content (after decompression), never by file name alone."""
from __future__ import annotations

import re

from . import otlp_proto, prom_text

OTLP_JSON = "otlp-json"
OTLP_PROTO = "otlp-proto"
OTLP_PROTO_FRAMED = "otlp-proto-framed"
JAEGER_JSON = "jaeger-json"
ZIPKIN_JSON = "zipkin-json"
PROM_TEXT = "prometheus-text"
PROM_API_JSON = "prometheus-api-json"
TRITON_CONFIG = "triton-config"
HEAD_BYTES = 64 << 10

_TRITON_CONFIG = re.compile(rb"^\s*(name|platform|backend|max_batch_size|input|output|dynamic_batching|instance_group)\s*[:\[{]", re.M)


def detect(head: bytes, size: int) -> tuple[str | None, str]:
    """(format, reason). ``head`` is the first decompressed bytes; ``size`` the raw file size."""
    if not head.strip():
        return None, "empty file"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        if b'"resourceSpans"' in head:
            return OTLP_JSON, ""
        if b'"resultType"' in head:
            return PROM_API_JSON, ""
        if b'"spanID"' in head or b'"traceID"' in head:
            return JAEGER_JSON, ""
        if stripped[:1] == b"[" and b'"traceId"' in head and (b'"localEndpoint"' in head or b'"timestamp"' in head):
            return ZIPKIN_JSON, ""
        return None, "JSON, but no known telemetry layout (OTLP, Jaeger, Zipkin, Prometheus API)"
    text = None
    if b"\x00" not in head:
        try:
            text = head[:-4].decode("utf-8") if len(head) > 4 else head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is not None:
        if prom_text.is_prometheus_text(text):
            return PROM_TEXT, ""
        if _TRITON_CONFIG.search(head):
            return TRITON_CONFIG, ""
    if otlp_proto.looks_length_prefixed(head, size):
        return OTLP_PROTO_FRAMED, ""
    if len(head) < HEAD_BYTES and otlp_proto.looks_like_request(head):
        return OTLP_PROTO, ""
    if head[:1] == b"\x0a":
        from .proto_salvage import salvage_request

        # a damaged body, or the head of a large one: it must hold a whole span (a "\n" then zeros does not)
        if salvage_request(head) is not None:
            return OTLP_PROTO, ""
    return None, "unknown format"
