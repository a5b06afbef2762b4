"""Trace backends as inputs: a PATH that is a URL reads the incident window from where the traces already are.

    clickhouse://[user@]host:port/db[?table=otel_traces&secure=1&service=NAME&name=SPAN]
                                                                     the OTel Collector's clickhouseexporter schema
    chdb:///path/to/dir/db[?table=otel_traces]                       the same SQL, run by chDB in this process
    tempo://host:port[?service=NAME&limit=N]                         Grafana Tempo's HTTP API
    jaeger://host:port[?service=NAME&api=v3|v1]                      Jaeger's query service

A source URL becomes a ``Source``: the URL text (a ``str``, so that titles, constraints lookup and messages
treat it as any other PATH) carrying the window (``--since`` or ``--from``/``--to``) and the detail budget
(``--max-spans``). ``collectors.ingest`` hands every ``Source`` to ``ingest`` here; its rows go through the
same value layer as files (``SpanColumns``/``SpanSink``), and what the backend computed exactly (the
headline) is kept in ``IngestResult.backends`` for the report (``figures.annotate``).

Credentials come from the environment or files, never argv: a URL with ``user:password@`` is refused.
Every failure the user can fix (unreachable, credentials, missing table, unrecognised schema, an empty
window) is a ``BackendError`` (a ``UsageError``: exit 2 with its message, no traceback).
"""
from __future__ import annotations

from .read import ingest
from .source import (DEFAULT_MAX_SPANS, BackendError, Source, Window, check_url, is_url, iso, parse_time,
                     resolve, window)

__all__ = ["DEFAULT_MAX_SPANS", "BackendError", "Source", "Window", "check_url", "ingest", "is_url", "iso",
           "parse_time", "resolve", "window"]
