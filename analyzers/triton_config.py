"""Triton model configuration (config.pbtxt), parsed with Triton's own ModelConfig protobuf and
protobuf's text_format, never with regular expressions."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchingConfig:
    model: str
    path: str
    max_batch_size: int
    dynamic_batching: bool
    max_queue_delay_us: int
    preferred_batch_sizes: list[int]
    instances: int


def parse(text: str, path: str = ""):
    """A ModelConfig message; raises ValueError with the parser's message on invalid text."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path or 'config.pbtxt'}: {exc}") from exc


def batching(store) -> dict[str, BatchingConfig]:
    """The batching settings of every model whose config.pbtxt is in the capture (model name → config)."""
    out = {}
    for path, model, text in store.query("SELECT path, model, text FROM model_configs"):
        try:
            c = parse(text, path)
        except ValueError:
            continue
        out[c.name or model] = BatchingConfig(
            model=c.name or model, path=path, max_batch_size=c.max_batch_size,
            dynamic_batching=c.HasField("dynamic_batching"),
            max_queue_delay_us=c.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_sizes=list(c.dynamic_batching.preferred_batch_size),
            instances=sum(g.count or 1 for g in c.instance_group) or 1)
    return out
