"""Capture-level data quality, after every file is in: duplicate spans, orphan spans, clock skew.
Each is counted as a problem (the analysis already copes: duplicates are collapsed, orphans that are
SERVER spans start their own request, children are clipped to their parents)."""
from __future__ import annotations

from .problems import Problems

CAPTURE = "(capture)"


def capture_checks(store, problems: Problems) -> None:
    dup = store.scalar("""SELECT coalesce(sum(n - 1), 0) FROM (
        SELECT count(*) AS n FROM spans GROUP BY trace_id, span_id HAVING count(*) > 1)""")
    if dup:
        problems.add(CAPTURE, "spans", f"{dup} duplicate span(s) (same trace and span id); one of each is used")
    orphans = store.query("""
        SELECT c.service, count(*) FROM spans c
        WHERE c.parent_span_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM spans p WHERE p.trace_id = c.trace_id AND p.span_id = c.parent_span_id)
        GROUP BY 1 ORDER BY 2 DESC""")
    for service, n in orphans:
        problems.add(CAPTURE, f"service {service}", f"{n} orphan span(s): parent not in the capture")
    skew = store.query("""
        SELECT p.service, c.service, count(*), max(p.start_ns - c.start_ns) / 1e6
        FROM spans c JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
        WHERE c.start_ns < p.start_ns
        GROUP BY 1, 2 ORDER BY 3 DESC""")
    # A child that starts before its parent is impossible on one clock. (Ending after it is not: a server
    # keeps working after its client timed out.)
    for parent_svc, child_svc, n, worst in skew:
        problems.add(CAPTURE, f"{parent_svc} → {child_svc}",
                     f"clock skew: {n} span(s) start before their parent, by up to {worst:.3f} ms; "
                     "clipped to the parent")
