"""Many small files load at the speed of one big one.

An exporter that writes one file per request leaves tens of thousands of files of a few spans each. Loading
each on its own costs a dozen DuckDB statements (staging, flattening, checks, the ``inputs`` row), ~40 ms,
whatever its size. Small OTLP JSON lines files are therefore only decoded one by one (msgspec, the exact
path, as for any chunk); their rows are gathered into one batch, which is loaded with the same SQL as a
chunk of a big file once it holds FLUSH_SPANS spans, before the next large file, and at the end. Every
file keeps its own ``source`` on its rows, its problems (by file and line) and its ``inputs`` row, so the
result is the one each file would give alone.
"""
from __future__ import annotations

from .otlp_lines_exact import RawSpans, decode_lines, load_batch
from .problems import Problems
from .store import Store

SMALL_FILE_BYTES = 1 << 20  # decompressed; larger files take the chunked path (Arrow, worker processes)
FLUSH_SPANS = 50_000


class SmallFiles:
    def __init__(self, store: Store, problems: Problems):
        self.store = store
        self.problems = problems  # the ingest's: decode problems are merged at once, load problems at flush
        self.pending: set[str] = set()  # input paths in this batch (not yet in the store's inputs)
        self._new_batch()

    def _new_batch(self) -> None:
        self.batch = RawSpans("(small files)")
        self.files: list[list] = []  # [path, format, spans, problems]

    def add(self, source: str, label: str, data: bytes, problems_before: int = 0) -> int:
        """Decode one whole small file of JSON lines; returns its spans (loaded at the next flush).
        ``problems_before``: problems of this file already counted (reading it)."""
        got = decode_lines(data, source, 1)
        n = len(got)
        for mine, theirs in ((self.batch.raw, got.raw), (self.batch.spans, got.spans),
                             (self.batch.events, got.events)):
            for col, values in theirs.items():
                if values:
                    mine[col].extend(values)
        self.problems.merge(got.problems)
        self.files.append([source, label, n, problems_before + got.problems.count])
        self.pending.add(source)
        if len(self.batch) >= FLUSH_SPANS:
            self.flush()
        return n

    def flush(self) -> None:
        if not self.files:
            return
        batch, files = self.batch, self.files
        self._new_batch()
        per_source: dict[str, int] = {}
        with self.store.transaction() as con:  # the spans and their files' inputs rows, together or not at all
            load_batch(con, batch, per_source)
            for f in files:
                f[3] += per_source.get(f[0], 0)
            # one transaction with the spans: no marker needed
            self.store.complete_inputs(con, [(p, fmt, n, 0, probs) for p, fmt, n, probs in files])
        self.pending.difference_update(f[0] for f in files)
        self.problems.merge(batch.problems)
