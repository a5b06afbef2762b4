"""One module per input format, all behind one protocol, registered in ``READERS``.

A reader module has
- ``FORMAT``: its name (stored in ``inputs.format``, shown in reports);
- ``sniff(head: bytes, size: int) -> bool``: whether the first ``sniff.HEAD_BYTES`` of the decompressed
  content (``size``: the raw file's size) are this format. Sniffers look at content, never at file names;
- ``read(src: streams.Source, sink: spans.SpanSink, pool: parallel.Pool, progress) -> int``: read the whole
  source; spans go to the sink (which counts them), samples and other rows to ``sink.store``, problems to
  ``sink.problems``; ``progress()`` (or None) is called now and then; returns the samples written.
  It never raises on bad input: damage is a problem with its place.
- optionally ``small_lines(src, head, size) -> bytes | None``: the content of a small file that is loaded
  together with other small files (``collectors.small_files``) instead of by ``read``.

Readers depend on the shared lower modules (streams, spans, the OTLP model and paths, problems), never on
each other. A new format is one module here and one line in ``READERS``.
"""
from __future__ import annotations

from . import (jaeger_json, otlp_json, otlp_proto, otlp_proto_framed, prom_api, prom_text, triton_config,
               zipkin_json)

# In the order detection tries them: the first whose sniff says yes reads the file.
READERS = (
    otlp_json,
    prom_api,
    jaeger_json,
    zipkin_json,
    prom_text,
    triton_config,
    otlp_proto_framed,
    otlp_proto,
)
