"""Triton model configurations (``config.pbtxt``): not telemetry, but the batching rules read them. The text
is stored whole in ``model_configs`` under the model's name."""
from __future__ import annotations

import re

from .. import streams
from ..parallel import Pool
from ..sniff import looks_json, text_of
from ..spans import SpanSink
from ..triton_model_config import model_name
from ..walk import display

FORMAT = "triton-config"
_FIELDS = re.compile(rb"^\s*(name|platform|backend|max_batch_size|input|output|dynamic_batching|instance_group)"
                     rb"\s*[:\[{]", re.M)


def sniff(head: bytes, size: int) -> bool:
    return not looks_json(head) and text_of(head) is not None and _FIELDS.search(head) is not None


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
    text = streams.read_all(src, limit=1 << 20).decode("utf-8", errors="replace")
    # the model the config names (read by Triton's ModelConfig protobuf), else its folder's (Triton's default)
    sink.store.execute("INSERT INTO model_configs VALUES (?, ?, ?)",
                       [src.name, model_name(text, display(src.path.parent.name)), text])
    return 0
