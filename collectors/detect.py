"""Format detection by content, never by file name alone."""
from __future__ import annotations

import re

from . import otlp_proto, prom_text

OTLP_JSON = "otlp-json"
OTLP_PROTO = "otlp-proto"
PROM_TEXT = "prometheus-text"

_TRITON_CONFIG = re.compile(r"^\s*(name|platform|backend|max_batch_size|input|output|dynamic_batching|instance_group)\s*[:\[{]", re.M)


def detect(head: bytes, read_all) -> tuple[str | None, str]:
    """(format, reason). ``head`` is the first bytes; ``read_all()`` returns the whole file if needed."""
    if not head.strip():
        return None, "empty file"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        if b'"resourceSpans"' in head or b'"resourceSpans"' in read_all():
            return OTLP_JSON, ""
        body = read_all()
        if b'"traceID"' in body and b'"spans"' in body:
            return None, "Jaeger JSON (not supported yet; export OTLP instead)"
        if b'"traceId"' in body and (b'"localEndpoint"' in body or b'"remoteEndpoint"' in body):
            return None, "Zipkin v2 JSON (not supported yet; export OTLP instead)"
        return None, "JSON, but not an OTLP trace export (no resourceSpans)"
    try:
        text = None if b"\x00" in head else head[:-4].decode("utf-8") if len(head) > 4 else head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        if prom_text.is_prometheus_text(text):
            return PROM_TEXT, ""
        if _TRITON_CONFIG.search(text):
            return None, "Triton model configuration (not telemetry)"
    if otlp_proto.looks_like_request(read_all()):
        return OTLP_PROTO, ""
    return None, "unknown format"
