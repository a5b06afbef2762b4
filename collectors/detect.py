"""Format detection by content (after decompression), never by file name alone: the first reader of
``readers.READERS`` whose ``sniff`` takes the head reads the file."""
from __future__ import annotations

from .readers import READERS
from .sniff import looks_json


def detect(head: bytes, size: int):
    """(reader module or None, reason). ``head`` is the first decompressed bytes; ``size`` the raw file size."""
    if not head.strip():
        return None, "empty file"
    for reader in READERS:
        if reader.sniff(head, size):
            return reader, ""
    if looks_json(head):
        return None, "JSON, but no known telemetry layout (OTLP, Jaeger, Zipkin, Prometheus API)"
    return None, "unknown format"
