"""A live session's ``--db``: everything the session received, kept in a store file.

The live store is an in-memory rolling window (rows older than the window are dropped). With an archive,
rows are copied into the file as they leave the window, and everything still in the window when the session
stops: each span, event and sample is written to the file exactly once. The session is one ``inputs`` row
(``live:<endpoint>``), incomplete until the session stops, so a killed session's file says so in its report.
"""
from __future__ import annotations

from datetime import datetime, timezone

from .store import Store

_ALIAS = "triage_archive"


class Archive:
    def __init__(self, store: Store, path: str, label: str):
        Store(path).close()  # creates the schema, or fails with an error naming the file (lock, not DuckDB, ...)
        self.store, self.path = store, str(path)
        self.label = f"{label} {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
        quoted = self.path.replace("'", "''")
        with store.writer() as con:
            con.execute(f"ATTACH '{quoted}' AS {_ALIAS}")
            con.execute(f"INSERT INTO {_ALIAS}.inputs (path, format, complete) VALUES (?, 'otlp-live', false)",
                        [self.label])
        self.spans = self.samples = 0

    def keep_leaving(self, con, trace_ids_sql: str, samples_before_ms: int) -> None:
        """Copy the rows about to leave the window on ``con``, in a transaction the caller holds (the live
        staging's ``forget``, sessions/staging.py, keeps the store held until it has deleted them, so no span is
        lost or copied twice): the traces that ``trace_ids_sql`` selects (the live window follows arrival, so
        the staging says which) and the samples before ``samples_before_ms``."""
        where = f"trace_id IN ({trace_ids_sql})"
        self._copy_in(con, where, where, "ts_ms < ?", [], [], [samples_before_ms])

    def close(self) -> None:
        """Copy everything still in the window, mark the session complete, detach the file."""
        self._copy("true", "true", "true", [], [], [])
        with self.store.writer() as con:
            con.execute(f"UPDATE {_ALIAS}.inputs SET spans = ?, samples = ?, problems = 0, complete = true "
                        f"WHERE path = ?", [self.spans, self.samples, self.label])
            con.execute(f"DETACH {_ALIAS}")

    def _copy(self, *where) -> None:
        with self.store.transaction() as con:
            self._copy_in(con, *where)

    def _copy_in(self, con, spans_where, events_where, samples_where, sp, ep, mp) -> None:
        self.spans += con.execute(f"INSERT INTO {_ALIAS}.spans SELECT * FROM spans WHERE {spans_where}",
                                  sp).fetchone()[0]
        con.execute(f"INSERT INTO {_ALIAS}.span_events SELECT * FROM span_events WHERE {events_where}", ep)
        self.samples += con.execute(f"INSERT INTO {_ALIAS}.samples SELECT * FROM samples WHERE {samples_where}",
                                    mp).fetchone()[0]
