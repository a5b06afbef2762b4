"""The live trace-staging policy: which traces have settled, when they join the analysis, and when they leave
the live window.

A staging receiver (``Receiver(staging=True)``) writes each span into ``pending_spans`` / ``pending_events``
with its arrival time (``Receiver.clock()``) and decides nothing more. ``promote()`` moves a trace into
``spans`` / ``span_events`` once no span of it has arrived for a while: services export in batches (the
OpenTelemetry SDK's batch processor every 5 s by default, Triton likewise), so a request's downstream spans
often arrive seconds after its root; analysed before they arrive, the request would look as if it never queued
or computed. Promotion keeps one span per (trace id, span id) and counts the duplicates in the receiver's stats.
``forget()`` drops the analysed traces by arrival, not by their own timestamps, so spans from an exporter whose
clock is off are analysed, not dropped.

The live session (sessions/live.py) chooses the settle time, the hold cap and the window.
"""
from __future__ import annotations

from triage.collectors.receiver import Receiver
from triage.collectors.store import EVENT_COLUMNS, SPAN_COLUMNS


class Staging:
    """Promotion and the window over a staging receiver's pending tables (and the store it writes to)."""

    def __init__(self, receiver: Receiver):
        self.receiver, self.store = receiver, receiver.store
        self.store.execute("CREATE TABLE IF NOT EXISTS trace_arrivals (trace_id VARCHAR, arrived_ns BIGINT)")

    def promote(self, idle_s: float | None = None, max_hold_s: float | None = None,
                begun_by_ns: int | None = None) -> int:
        """Move staged traces into ``spans`` / ``span_events`` in one transaction: those that have had no new
        span for ``idle_s`` seconds or whose first span came more than ``max_hold_s`` ago (a trace that keeps
        growing is not held back for ever); with ``begun_by_ns`` (a ``Receiver.clock()`` reading) instead, those
        whose first span had arrived by then; all of them when neither is given. Returns the spans moved."""
        with self.store.transaction() as con:
            now = self.receiver.clock()
            having = ""
            if begun_by_ns is not None:
                having = f"HAVING min(arrived_ns) <= {int(begun_by_ns)}"
            elif idle_s is not None:
                having = f"HAVING max(arrived_ns) <= {now - int(idle_s * 1e9)}"
                if max_hold_s is not None:
                    having += f" OR min(arrived_ns) <= {now - int(max_hold_s * 1e9)}"
            return self._move(con, having)

    def forget(self, arrived_before_ns: int, keep=None) -> int:
        """Drop the analysed traces that last arrived before ``arrived_before_ns`` (a ``Receiver.clock()``
        reading): a live window that follows arrival, so spans from an exporter whose clock is off are analysed,
        not dropped.
        ``keep(con, trace_ids_sql)``, when given, first copies them elsewhere (``--db``: an attached file, which
        DuckDB writes in a transaction of its own); the store stays held from the copy to the delete, so no span
        arrives in between to be deleted uncopied. Returns the spans dropped."""
        with self.store.writer() as con:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _old AS SELECT trace_id FROM trace_arrivals
                            GROUP BY trace_id HAVING max(arrived_ns) < {int(arrived_before_ns)}""")
            try:
                if keep:
                    _in_transaction(con, lambda: keep(con, "SELECT trace_id FROM _old"))

                def delete() -> int:
                    n = con.execute("DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM _old)").fetchone()[0]
                    for table in ("span_events", "trace_arrivals"):
                        con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM _old)")
                    return int(n)

                return _in_transaction(con, delete)
            finally:
                con.execute("DROP TABLE IF EXISTS _old")

    def pending(self) -> dict:
        """What is staged and not yet analysed: spans and traces."""
        spans, traces = self.store.query("SELECT count(*), count(DISTINCT trace_id) FROM pending_spans")[0]
        return {"spans": int(spans), "traces": int(traces)}

    def _move(self, con, having: str) -> int:
        """Move the staged traces selected by ``having`` (over pending_spans grouped by trace) into the analysed
        tables: one span per (trace id, span id), the first that arrived, with its events; duplicates (already
        promoted, or received more than once) are counted. Returns the spans moved."""
        span_cols, event_cols = ", ".join(SPAN_COLUMNS), ", ".join(EVENT_COLUMNS)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _settled AS SELECT trace_id, max(arrived_ns) AS last_ns
                        FROM pending_spans GROUP BY trace_id {having}""")
        con.execute("""CREATE OR REPLACE TEMP TABLE _pick AS
                       SELECT p.trace_id, p.span_id, min(p.arrived_ns) AS arrived_ns, count(*) AS copies
                       FROM pending_spans p SEMI JOIN _settled s ON p.trace_id = s.trace_id
                       GROUP BY p.trace_id, p.span_id""")
        con.execute("""CREATE OR REPLACE TEMP TABLE _new AS
                       SELECT k.* FROM _pick k
                       ANTI JOIN (SELECT trace_id, span_id FROM spans SEMI JOIN _settled USING (trace_id)) s
                       ON s.trace_id = k.trace_id AND s.span_id = k.span_id""")
        moved = con.execute(f"""INSERT INTO spans ({span_cols}) SELECT {span_cols} FROM pending_spans p
                                SEMI JOIN _new n ON p.trace_id = n.trace_id AND p.span_id = n.span_id
                                                 AND p.arrived_ns = n.arrived_ns
                                QUALIFY row_number() OVER (PARTITION BY p.trace_id, p.span_id) = 1""").fetchone()[0]
        con.execute(f"""INSERT INTO span_events ({event_cols}) SELECT {event_cols} FROM pending_events e
                        SEMI JOIN _new n ON e.trace_id = n.trace_id AND e.span_id = n.span_id
                                         AND e.arrived_ns = n.arrived_ns""")
        total = con.execute("SELECT coalesce(sum(copies), 0) FROM _pick").fetchone()[0]
        con.execute("INSERT INTO trace_arrivals SELECT trace_id, last_ns FROM _settled")  # what forget() reads
        for table in ("pending_spans", "pending_events"):
            con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM _settled)")
        for t in ("_settled", "_pick", "_new"):
            con.execute(f"DROP TABLE {t}")
        dups = int(total) - int(moved)
        if dups:
            self.receiver.count(duplicate_spans=dups)  # one problem for them all: see Receiver.all_problems()
        return int(moved)


def _in_transaction(con, work):
    """``work()`` inside one transaction on a connection the caller already holds (``Store.writer``)."""
    con.execute("BEGIN TRANSACTION")
    try:
        out = work()
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return out
