"""Messages from workers to the UI: results come back as messages, never as shared state."""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class IngestProgress(Message):
    done: int
    total: int
    path: str


@dataclass
class AnalysisReady(Message):
    report: dict
    series: dict   # route -> list of time buckets (analyzers.latency.timeseries)
    preliminary: float | None = None  # fraction ingested when this is an early look, None when final
    live_status: dict | None = None   # live mode: window, refresh time, Prometheus state


@dataclass
class AnalysisFailed(Message):
    error: str
