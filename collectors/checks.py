"""Capture-level data quality, after every file is in: duplicate spans, orphan spans, clock skew.
Each is counted as a problem (the analysis already copes: duplicates are collapsed, orphans that are
SERVER spans start their own request, children are clipped to their parents)."""
from __future__ import annotations

from .problems import Problems
from .store import span_key, trace_key

CAPTURE = "(capture)"


def capture_checks(store, problems: Problems) -> None:
    with store.writer() as con:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _checks AS
                        SELECT {trace_key('trace_id')} AS t, {span_key('span_id')} AS sid,
                               {span_key('parent_span_id')} AS pid, service, start_ns FROM spans""")
        try:
            dup = con.execute("SELECT count(*) - count(DISTINCT (t, sid)) FROM _checks").fetchone()[0]
            orphans = con.execute("""
                SELECT c.service, count(*) FROM _checks c
                ANTI JOIN _checks p ON p.t = c.t AND p.sid = c.pid
                WHERE c.pid IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
            # A child that starts before its parent is impossible on one clock. (Ending after it is not: a
            # server keeps working after its client timed out.)
            skew = con.execute("""
                SELECT p.service, c.service, count(*), max(p.start_ns - c.start_ns) / 1e6
                FROM _checks c JOIN _checks p ON p.t = c.t AND p.sid = c.pid
                WHERE c.start_ns < p.start_ns
                GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2""").fetchall()
        finally:
            con.execute("DROP TABLE IF EXISTS _checks")
    if dup:
        problems.add(CAPTURE, "spans", f"{dup} duplicate span(s) (same trace and span id); one of each is used")
    for service, n in orphans:
        problems.add(CAPTURE, f"service {service}", f"{n} orphan span(s): parent not in the capture")
    for parent_svc, child_svc, n, worst in skew:
        problems.add(CAPTURE, f"{parent_svc} → {child_svc}",
                     f"clock skew: {n} span(s) start before their parent, by up to {worst:.3f} ms; "
                     "clipped to the parent")
