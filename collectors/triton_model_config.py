"""Triton's model configuration (``config.pbtxt``), read and written in this one place, with Triton's own
``ModelConfig`` protobuf (tritonclient's ``model_config_pb2``) and protobuf's ``text_format``, never with
regular expressions.

Ingest stores each config.pbtxt found in a capture under the model it names (``model_name``); the batching
rules read the small typed view they need (``batching``: name, max_batch_size, dynamic batching's
``max_queue_delay_microseconds`` and preferred sizes, instance count); the batching remediation parses the
message, changes a few fields and writes the rest back as they were (``render``).
"""
from __future__ import annotations

from dataclasses import dataclass

from triage.errors import UsageError


@dataclass(frozen=True)
class BatchingConfig:
    model: str
    path: str
    max_batch_size: int
    dynamic_batching: bool
    max_queue_delay_us: int
    preferred_batch_sizes: list[int]
    instances: int


def parse(text: str, path: str = ""):
    """A ModelConfig message; raises UsageError (a ValueError) with the parser's message on invalid text."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise UsageError(f"{path or 'config.pbtxt'}: {exc}") from exc


def render(cfg) -> str:
    """The config.pbtxt text of a ModelConfig message (text_format: comments and field order are not kept)."""
    from google.protobuf import text_format

    return text_format.MessageToString(cfg)


def instances(cfg) -> int:
    """Model instances over all instance groups (a group without a count has one; no group: one)."""
    return sum(g.count or 1 for g in cfg.instance_group) or 1


def model_name(text: str, fallback: str) -> str:
    """The model a config.pbtxt names, or ``fallback`` (its folder's name) when it names none or does not parse."""
    try:
        return parse(text).name or fallback
    except ValueError:
        return fallback


def view(cfg, path: str, model: str) -> BatchingConfig:
    """The batching settings of a ModelConfig message (``model`` when the message names none)."""
    return BatchingConfig(
        model=cfg.name or model, path=path, max_batch_size=cfg.max_batch_size,
        dynamic_batching=cfg.HasField("dynamic_batching"),
        max_queue_delay_us=cfg.dynamic_batching.max_queue_delay_microseconds,
        preferred_batch_sizes=list(cfg.dynamic_batching.preferred_batch_size), instances=instances(cfg))


def batching(store) -> dict[str, BatchingConfig]:
    """The batching settings of every model whose config.pbtxt is in the capture (model name → config);
    a config that does not parse is left out."""
    out = {}
    for path, model, text in store.query("SELECT path, model, text FROM model_configs"):
        try:
            c = view(parse(text, path), path, model)
        except ValueError:
            continue
        out[c.model] = c
    return out
