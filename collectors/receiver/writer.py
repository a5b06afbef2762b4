"""The OTLP receiver's single writer: every span it acknowledges is committed to the store here, on one thread.

Small requests go before large ones, and a large request is written in pieces of ``PIECE_SPANS`` spans with the
small requests that arrived meanwhile in between. Spans and their events are written together or not at all
(a store failure answers 503, and the client's retry leaves no duplicate); a batch the store refuses for its
data is split by halving until the spans it cannot hold are isolated, and the others are stored (answered as
partial success). The same (trace id, span id) is kept once.

With ``staging`` (live sessions) spans land in ``pending_spans`` / ``pending_events`` with their arrival time
(the receiver's ``clock()``, stamped once the writer holds the store); when they move into ``spans`` /
``span_events`` is the live session's decision (sessions/staging.py). Without staging they are written into
the analysed tables directly. Spans whose end time is far from their arrival time are reported as clock skew
(once per service).
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..spans import SpanColumns
from ..store import EVENT_COLUMNS, SPAN_COLUMNS, Store, insert_frame
from .payloads import DATA_ERRORS

PIECE_SPANS = 8192           # a large request is written in pieces this size, small requests in between
SKEW_BEHIND_NS = 5 * 60 * 10**9   # a span ending this long before it arrived: the exporter's clock is behind
SKEW_AHEAD_NS = 60 * 10**9        # ... or after it arrived: ahead


@dataclass
class Job:
    cols: SpanColumns
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None          # the store failed (retryable)
    stored: int = 0
    rejected: int = 0                 # spans the store refused (data), answered as partial success
    done_cb: object = None            # called by the writer when done (wakes the waiting request)


class Writer:
    """The writer thread and its queue. ``clock()`` stamps arrivals, ``count(**stats)`` and
    ``problem(where, message)`` report to the receiver."""

    def __init__(self, store: Store, staging: bool, queue_size: int, clock, count, problem):
        self.store, self.staging = store, staging
        for table, like in (("pending_spans", "spans"), ("pending_events", "span_events")):
            store.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT *, 0::BIGINT AS arrived_ns "
                          f"FROM {like} LIMIT 0")
        self.queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=queue_size)
        self._seq = itertools.count()
        self._clock, self._count, self._problem = clock, count, problem
        self._skew_seen: set[tuple[str, str]] = set()
        # without staging: hashes of the (trace id, span id) pairs written, seeded from the store
        self._seen: set[int] = set() if staging else {
            hash(k) for k in store.query("SELECT trace_id, span_id FROM spans")}
        self._last_arrival = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write_loop, daemon=True, name="otlp-writer")
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue one request's spans (small ones first). Raises queue.Full."""
        self.queue.put_nowait((0 if len(job.cols) <= PIECE_SPANS else 1, next(self._seq), job))

    def stop(self) -> None:
        """Finish what was queued (acknowledged or about to be), then end the thread."""
        if self._thread is not None:
            self.queue.put((9, next(self._seq), None))
            self._thread.join()
            self._thread = None

    def _write_loop(self) -> None:
        while True:
            _, _, job = self.queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        """Store one request's spans. A large request is written in pieces of ``PIECE_SPANS``, with the small
        requests that arrived meanwhile written between two pieces (a 10 MB batch would otherwise hold the
        writer for a second). A piece that fails for a store error answers the request 503; the pieces already
        written are not lost or doubled when the client retries (duplicates are kept once)."""
        try:
            pieces = [job.cols] if len(job.cols) <= PIECE_SPANS else _pieces(job.cols, PIECE_SPANS)
            for k, piece in enumerate(pieces):
                if k:
                    self._write_small_waiting()
                try:
                    (self.write if piece is job.cols else lambda c: self._write_frames(c.spans, c.events))(piece)
                    job.stored += len(piece)
                except DATA_ERRORS:
                    stored, rejected = self._write_isolating(piece)
                    job.stored += stored
                    job.rejected += rejected
        except Exception as exc:  # noqa: BLE001  the store failed (disk full, ...): 503, retry
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            if job.done_cb:
                job.done_cb()
            job.done.set()

    def _write_small_waiting(self) -> None:
        while True:
            with self.queue.mutex:  # only this thread takes from the queue: what is at its head stays there
                head = self.queue.queue[0] if self.queue.queue else None
            if head is None or head[0] != 0 or head[2] is None:
                return
            self._run(self.queue.get_nowait()[2])

    def write(self, cols: SpanColumns) -> None:
        """One request's spans and events, both or neither (a 503 makes the client send them again)."""
        self._write_frames(cols.spans, cols.events)

    def _write_frames(self, spans: dict, events: dict) -> None:
        self._check_skew(spans)
        if not self.staging:
            return self._write_direct(spans, events)
        with self.store.transaction() as con:
            # stamped once the writer holds the store (waiting for it is not settling time), unique per batch
            now = max(self._clock(), self._last_arrival + 1)
            self._last_arrival = now
            for table, names, data in (("pending_spans", SPAN_COLUMNS, spans),
                                       ("pending_events", EVENT_COLUMNS, events)):
                arrived = np.full(len(data[names[0]]), now, dtype=np.int64)
                insert_frame(con, table, names + ("arrived_ns",), {**data, "arrived_ns": arrived})

    def _write_direct(self, spans: dict, events: dict) -> None:
        """Without staging: straight into the analysed tables, one span per (trace id, span id). The ids
        written are remembered as 64-bit hashes (a duplicate check in the store would scan every span for
        every request)."""
        pairs = list(zip(spans["trace_id"], spans["span_id"]))
        hashes = [hash(k) for k in pairs]
        seen = self._seen
        if len(set(hashes)) < len(hashes) or not seen.isdisjoint(hashes):
            keep, kept = [], set()
            for i, h in enumerate(hashes):
                if h not in seen and h not in kept:
                    kept.add(h)
                    keep.append(i)
            stored = {pairs[i] for i in keep}
            first_event, ekeep = set(), []
            for j, ev in enumerate(zip(events["trace_id"], events["span_id"], events["name"], events["ts_ns"])):
                if ev[:2] in stored and ev not in first_event:  # events of a repeated span: once
                    first_event.add(ev)
                    ekeep.append(j)
            self._count(duplicate_spans=len(pairs) - len(keep))
            spans = {c: [v[i] for i in keep] for c, v in spans.items()}
            events = {c: [v[j] for j in ekeep] for c, v in events.items()}
            hashes = [hashes[i] for i in keep]
        with self.store.transaction() as con:
            insert_frame(con, "spans", SPAN_COLUMNS, spans)
            insert_frame(con, "span_events", EVENT_COLUMNS, events)
        seen.update(hashes)  # once committed

    def _write_isolating(self, cols: SpanColumns) -> tuple[int, int]:
        """The batch failed for its data: find the spans the store refuses (by halving), store the others.
        Returns (stored, rejected)."""
        n = len(cols)
        keys = list(zip(cols.spans["trace_id"], cols.spans["span_id"]))
        ev_of: dict = {}
        for i, k in enumerate(zip(cols.events["trace_id"], cols.events["span_id"])):
            ev_of.setdefault(k, []).append(i)

        def frames(idx):
            spans = {c: [v[i] for i in idx] for c, v in cols.spans.items()}
            eidx = [j for i in idx for j in ev_of.get(keys[i], ())]
            events = {c: [v[j] for j in eidx] for c, v in cols.events.items()}
            return spans, events

        with self.store.writer() as con:
            for t, like in (("_probe_spans", "spans"), ("_probe_events", "span_events")):
                con.execute(f"CREATE OR REPLACE TEMP TABLE {t} AS SELECT * FROM {like} LIMIT 0")

            why: dict = {}

            def fails(idx) -> bool:
                spans, events = frames(idx)
                try:
                    insert_frame(con, "_probe_spans", SPAN_COLUMNS, spans)
                    insert_frame(con, "_probe_events", EVENT_COLUMNS, events)
                    return False
                except DATA_ERRORS as exc:
                    if len(idx) == 1:
                        why[idx[0]] = str(exc).splitlines()[0][:160]
                    return True
                finally:
                    con.execute("DELETE FROM _probe_spans")
                    con.execute("DELETE FROM _probe_events")

            bad: list[int] = []
            todo = [list(range(n))]
            while todo:
                idx = todo.pop()
                if not idx or not fails(idx):
                    continue
                if len(idx) == 1:
                    bad.append(idx[0])
                else:
                    todo += [idx[:len(idx) // 2], idx[len(idx) // 2:]]
            for t in ("_probe_spans", "_probe_events"):
                con.execute(f"DROP TABLE IF EXISTS {t}")
        bad_set = set(bad)
        for i in sorted(bad)[:20]:
            cols.problems.add(cols.source, f"span {keys[i][1]}",
                              f"a value the store cannot hold ({why.get(i, '?')}); span rejected")
        good = [i for i in range(n) if i not in bad_set]
        if good:
            self._write_frames(*frames(good))
        return len(good), len(bad)

    def _check_skew(self, spans: dict) -> None:
        """Clock skew: spans ending far before or after they arrived (once per service and direction)."""
        ends = spans["end_ns"]
        if not ends:
            return
        wall = time.time_ns()
        worst: dict = {}
        for svc, end in zip(spans["service"], ends):
            if not isinstance(end, int):
                continue
            d = end - wall
            key = (svc, "ahead" if d > 0 else "behind")
            if (d > SKEW_AHEAD_NS or -d > SKEW_BEHIND_NS) and key not in self._skew_seen:
                worst[key] = max(worst.get(key, 0), abs(d))
        for (svc, way), d in worst.items():
            self._skew_seen.add((svc, way))
            self._problem(f"service {svc}", f"clock skew: spans end up to {d / 60e9:.1f} min {way} of their arrival "
                          f"({'the exporter clock is behind, or the spans were delivered late' if way == 'behind' else 'the exporter clock is ahead'}); "
                          "live mode keeps them by arrival time")


def _pieces(cols: SpanColumns, size: int) -> list[SpanColumns]:
    """``cols`` in pieces of ``size`` spans, each with the events of its spans (sharing the problems)."""
    keys = list(zip(cols.spans["trace_id"], cols.spans["span_id"]))
    piece_of = {}
    for i, k in enumerate(keys):
        piece_of.setdefault(k, i // size)
    out = []
    for start in range(0, len(keys), size):
        p = SpanColumns(cols.source, cols.problems)
        p.spans = {c: v[start:start + size] for c, v in cols.spans.items()}
        p.events = {c: [] for c in cols.events}
        out.append(p)
    for j, k in enumerate(zip(cols.events["trace_id"], cols.events["span_id"])):
        ev = out[piece_of.get(k, 0)].events
        for c, v in cols.events.items():
            ev[c].append(v[j])
    return out
