"""The TUI's messages: messages up, attributes down.

Screens post requests up to the app (they bubble from the screen to it); the app owns the state (store, report,
filter, guardrails, the fixes applied) and every worker. Workers return their results as messages to the app,
never as shared state: the app assigns its state in the handlers, on its own thread, and hands data down to the
screens (constructor arguments, method calls). tests/test_h_tui_messages.py checks the rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

# -- results of the app's workers ------------------------------------------------------------------


@dataclass
class IngestProgress(Message):
    done: int
    total: int
    path: str


@dataclass
class CaptureLoaded(Message):
    """The offline analysis is done: its store (the requests table materialized) and the guardrails in force.
    Posted before the final AnalysisReady, so the store is in place when the report is shown."""
    store: object      # a collectors.store.Store
    guardrails: dict


@dataclass
class AnalysisReady(Message):
    report: dict
    series: dict   # route -> list of time buckets (analyzers.latency.timeseries)
    preliminary: float | None = None  # fraction ingested when this is an early look, None when final
    live_status: dict | None = None   # live mode: window, refresh time, Prometheus state


@dataclass
class AnalysisFailed(Message):
    error: str


@dataclass
class LiveRefreshed(Message):
    """A live refresh is over (its result posted): the app arms the next one."""


@dataclass
class CohortReady(Message):
    report: dict
    filter: object     # the analyzers.requests.Filter whose cohort the report is of


@dataclass
class ScopeReady(Message):
    """The overview's figures on the requests a filter selects (analyzers.latency.cohort_latency)."""
    filter: object     # the analyzers.requests.Filter they are of
    latency: dict      # route -> requests, errors, p50/p95/p99 (the report's "latency" shape)
    stages: dict       # route -> stage -> p95_share, p50_ms, p95_ms (the report's "stages" shape)
    series: dict       # route -> time buckets
    total: int         # requests in the capture, to say how many of them the filter kept


@dataclass
class CompareReady(Message):
    """``triage compare`` of two captures (analyzers.compare.compare_analyses), or why it could not run."""
    result: dict | None
    before: str
    after: str
    error: str | None = None


@dataclass
class RequestsPage(Message):
    """A window of the requests table, for the RequestsScreen fetch of the same generation."""
    generation: int
    offset: int
    total: int
    rows: list
    origin: int | None     # the window's time origin (ns): start column is relative to it
    cursor: int            # absolute row to put the cursor on
    error: str | None = None


@dataclass
class TraceLoaded(Message):
    screen: object         # the TraceScreen that asked
    trace: object          # an analyzers.trace.Trace, or None when no span of it is in the store
    error: str | None = None


@dataclass
class FixDone(Message):
    """The model fix ran: its result card (applied or not)."""
    result: dict


@dataclass
class RolledBack(Message):
    ledger_id: str
    undone: str


@dataclass
class Notice(Message):
    """A notification from a worker (progress, a failure, a file written)."""
    text: str
    timeout: float
    severity: str = "information"


# -- requests from the screens up to the app -------------------------------------------------------


@dataclass
class OpenTrace(Message):
    trace_id: str


@dataclass
class FetchRequests(Message):
    """A window of the requests table: ``limit`` rows from ``offset`` under this filter and sort order."""
    generation: int
    offset: int
    limit: int
    cursor: int
    filter: object         # an analyzers.requests.Filter
    sort: str
    descending: bool


@dataclass
class ExportRequests(Message):
    """Every request under this filter and sort order into a new CSV file."""
    filter: object
    sort: str
    descending: bool


@dataclass
class LoadTrace(Message):
    screen: object         # the TraceScreen that shows it
    trace_id: str


@dataclass
class PreviewModelFix(Message):
    """The quantization fix for this finding: plan it and show the preview."""
    finding: dict


@dataclass
class RollBackModelFix(Message):
    """Roll back the last fix applied in this session."""
