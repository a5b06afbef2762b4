"""Triton model configurations (``config.pbtxt``): not telemetry, but the batching rules read them. The text
is stored whole in ``model_configs`` under the model's name."""
from __future__ import annotations

import re

from .. import streams
from ..parallel import Pool
from ..sniff import looks_json, text_of
from ..spans import SpanSink
from ..walk import display

FORMAT = "triton-config"
_FIELDS = re.compile(rb"^\s*(name|platform|backend|max_batch_size|input|output|dynamic_batching|instance_group)"
                     rb"\s*[:\[{]", re.M)


def sniff(head: bytes, size: int) -> bool:
    return not looks_json(head) and text_of(head) is not None and _FIELDS.search(head) is not None


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
    text = streams.read_all(src, limit=1 << 20).decode("utf-8", errors="replace")
    sink.store.execute("INSERT INTO model_configs VALUES (?, ?, ?)",
                       [src.name, _model_name(text, src), text])
    return 0


def _model_name(text: str, src: streams.Source) -> str:
    """The config's ``name`` field, else the name of its folder (Triton's default)."""
    m = re.search(r'^\s*name\s*:\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else display(src.path.parent.name)
