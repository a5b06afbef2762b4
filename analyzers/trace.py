"""One trace: its spans as a tree, each span's exclusive time, and the critical path. Pure (no UI).

``load`` reads a trace from the store (``spans``, ``span_events``, and ``span_times`` for the stage each span
counts in); ``build`` takes plain span dicts, so the tree, exclusive times and critical path are testable
without a store.

Intervals are clipped to the ancestors, as stage attribution does (``analyzers/stages.py``): a child that
outlives its parent (a timed-out call, clock skew) counts only inside it. Exclusive time = clipped duration
minus the union of the children's clipped intervals, so the exclusive times of a request's spans add up to
its end-to-end time.

Critical path (as Jaeger computes it): start at the root's end; the last-finishing child is on the path, and
the parent's own time after that child's end is its section; recurse into that child; when a span has no
child left that ends before the point reached, its section runs from its start, and the walk returns to its
parent at this span's start, taking next the last child that ends before it.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int = 0
    status_message: str | None = None
    attributes: dict = field(default_factory=dict)
    resource: dict = field(default_factory=dict)
    events: list = field(default_factory=list)     # [(name, ts_ns, attributes)]
    links: list = field(default_factory=list)
    stage: str | None = None
    queue_ns: int = 0   # the part of the exclusive time carved out as queue (Triton's QUEUE_START...)
    # filled by build()
    depth: int = 0
    b: int = 0          # clipped interval
    e: int = 0
    self_ns: int = 0
    children: list = field(default_factory=list)
    parent: "Span | None" = field(default=None, repr=False)
    critical_ns: int = 0  # time of this span on the critical path (0: not on it)


@dataclass
class Trace:
    trace_id: str
    roots: list[Span]
    spans: dict[str, Span]
    start_ns: int
    end_ns: int
    critical: list[tuple[str, int, int]]   # (span_id, section start, section end), from the end backwards

    def order(self) -> list[Span]:
        """Depth-first, children by start: the waterfall's rows."""
        out, stack = [], list(reversed(self.roots))
        while stack:
            s = stack.pop()
            out.append(s)
            stack.extend(reversed(s.children))
        return out


def _union(intervals: list[tuple[int, int]]) -> int:
    total, reach = 0, None
    for b, e in sorted(intervals):
        if e <= b:
            continue
        if reach is None or b >= reach:
            total += e - b
            reach = e
        elif e > reach:
            total += e - reach
            reach = e
    return total


def build(trace_id: str, spans: list[Span]) -> Trace:
    by_id: dict[str, Span] = {}
    for s in spans:  # duplicates (a span sent twice): the longest wins, as in stage attribution
        old = by_id.get(s.span_id)
        if old is None or (s.end_ns - s.start_ns) > (old.end_ns - old.start_ns):
            by_id[s.span_id] = s
    roots = []
    for s in by_id.values():
        p = by_id.get(s.parent_span_id) if s.parent_span_id else None
        if p is None or p is s:
            roots.append(s)
        else:
            s.parent = p
            p.children.append(s)
    for s in by_id.values():
        s.children.sort(key=lambda c: (c.start_ns, c.end_ns, c.span_id))
    roots.sort(key=lambda s: (s.start_ns, s.span_id))
    # clip to ancestors, depth, exclusive time (iterative: deep traces do not hit the recursion limit)
    seen = set()
    for r in roots:
        r.depth, r.b, r.e = 0, r.start_ns, max(r.end_ns, r.start_ns)
        stack = [r]
        while stack:
            s = stack.pop()
            seen.add(s.span_id)
            for c in s.children:
                c.depth = s.depth + 1
                c.b = min(max(c.start_ns, s.b), s.e)   # a child wholly after its parent's end: empty, at the end
                c.e = max(min(c.end_ns, s.e), c.b)
                stack.append(c)
            s.self_ns = max(0, (s.e - s.b) - _union([(c.b, c.e) for c in s.children]))
    for s in by_id.values():  # a parent cycle: never reached from a root; shown as roots of their own
        if s.span_id not in seen:
            s.parent = None
            roots.append(s)
            s.depth, s.b, s.e, s.self_ns = 0, s.start_ns, max(s.end_ns, s.start_ns), max(0, s.end_ns - s.start_ns)
            s.children = [c for c in s.children if c.span_id in seen]
    critical = []
    for r in roots:
        critical += critical_path(r)
    for sid, b, e in critical:
        by_id[sid].critical_ns += e - b
    start = min((s.b for s in by_id.values()), default=0)
    end = max((s.e for s in by_id.values()), default=0)
    return Trace(trace_id, roots, by_id, start, end, critical)


def critical_path(root: Span) -> list[tuple[str, int, int]]:
    """Sections (span_id, start, end) of the critical path under ``root``, latest first."""
    path: list[tuple[str, int, int]] = []
    by_end: dict[str, tuple[list[int], list[Span]]] = {}  # per span: its children sorted by (end, start)

    def last_before(span: Span, end: int) -> Span | None:
        """The last-finishing child that ends at or before ``end`` (empty clipped intervals skip): a binary
        search, so a span with 10k children costs log(n) per step, not n."""
        if span.span_id not in by_end:
            kids = sorted((c for c in span.children if c.e > c.b), key=lambda c: (c.e, c.b))
            by_end[span.span_id] = ([c.e for c in kids], kids)
        ends, kids = by_end[span.span_id]
        i = bisect.bisect_right(ends, end)
        return kids[i - 1] if i else None

    span, until = root, None   # until: the start of the child we returned from (None: the span's end)
    while span is not None:
        end = span.e if until is None else until
        child = last_before(span, end)
        if child is not None:
            if child.e < end:
                path.append((span.span_id, child.e, end))
            span, until = child, None
            continue
        if end > span.b:
            path.append((span.span_id, span.b, end))
        if span is root:
            break
        span, until = span.parent, span.b
    return path


def _json(v) -> dict:
    if v is None:
        return {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return {"_raw": v}
    return v if isinstance(v, dict) else {"_value": v}


def load(store, trace_id: str) -> Trace | None:
    """The trace from the store, or None when it has no spans."""
    rows = store.query("""
        SELECT s.trace_id, s.span_id, s.parent_span_id, s.service, s.name, s.kind, s.start_ns, s.end_ns,
               s.status_code, s.status_message, s.attributes, s.resource, st.stage, coalesce(st.queue_ns, 0)
        FROM spans s LEFT JOIN span_times st ON st.trace_id = s.trace_id AND st.span_id = s.span_id
        WHERE s.trace_id = ?""", [trace_id])
    if not rows:
        return None
    events: dict[str, list] = {}
    for sid, name, ts, attrs in store.query(
            "SELECT span_id, name, ts_ns, attributes FROM span_events WHERE trace_id = ? ORDER BY ts_ns, name",
            [trace_id]):
        events.setdefault(sid, []).append((name, ts, _json(attrs)))
    spans = []
    for r in rows:
        attrs = _json(r[10])
        spans.append(Span(r[0], r[1], r[2], r[3] or "", r[4] or "", r[5] or 0, r[6] or 0, r[7] or 0, r[8] or 0, r[9],
                          attrs, _json(r[11]), events.get(r[1], []), [], r[12], r[13]))
    return build(trace_id, spans)


def request_sum(trace: Trace, root_id: str) -> tuple[int, int]:
    """(sum of the exclusive times under ``root_id``, the root's end-to-end time): equal by construction."""
    root = trace.spans[root_id]
    total, stack = 0, [root]
    while stack:
        s = stack.pop()
        total += s.self_ns
        stack.extend(s.children)
    return total, root.e - root.b


def to_otlp(trace: Trace) -> dict:
    """The trace as an OTLP/JSON ``ExportTraceServiceRequest`` (one resourceSpans per resource), with the
    spans' original (unclipped) times: what triage itself reads back."""
    from triage.collectors.export import key_values

    groups: dict[str, tuple[dict, list]] = {}
    for s in sorted(trace.spans.values(), key=lambda s: (s.start_ns, s.span_id)):
        res = dict(s.resource) or {"service.name": s.service}
        key = json.dumps(res, sort_keys=True)
        sp = {"traceId": s.trace_id, "spanId": s.span_id, "name": s.name, "kind": s.kind,
              "startTimeUnixNano": str(s.start_ns), "endTimeUnixNano": str(s.end_ns),
              "attributes": key_values(s.attributes),
              "events": [{"name": n, "timeUnixNano": str(ts), "attributes": key_values(a)} for n, ts, a in s.events],
              "status": {"code": s.status_code, **({"message": s.status_message} if s.status_message else {})}}
        if s.parent_span_id:
            sp["parentSpanId"] = s.parent_span_id
        groups.setdefault(key, (res, []))[1].append(sp)
    return {"resourceSpans": [{"resource": {"attributes": key_values(res)},
                               "scopeSpans": [{"scope": {"name": "triage"}, "spans": spans}]}
                              for res, spans in groups.values()]}
