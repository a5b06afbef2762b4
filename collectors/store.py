"""The DuckDB store: schema, one writer, cursors for readers.

In memory by default; a file when a path is given (persist, reopen, share). All writes go through
``Store`` methods, which hold a lock so that one connection writes at a time; readers call
``cursor()`` and keep that cursor in their own thread.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np

from triage.errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    parent_span_id VARCHAR,
    service VARCHAR,
    name VARCHAR,
    kind TINYINT,            -- OTLP SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    start_ns BIGINT,
    end_ns BIGINT,
    duration_ns BIGINT,
    status_code TINYINT,     -- OTLP StatusCode: 0 unset, 1 ok, 2 error
    status_message VARCHAR,
    route VARCHAR,           -- http.route (or rpc method), promoted from attributes
    http_status INTEGER,     -- http.response.status_code / http.status_code
    resend_count INTEGER,    -- http.request.resend_count (retries)
    model VARCHAR,           -- triton.model_name / gen_ai.request.model
    peer VARCHAR,            -- server.address / peer.service / net.peer.name of client spans
    input_size BIGINT,       -- an input size attribute (tokens), when one is present
    attributes JSON,
    resource JSON,
    source VARCHAR
);
CREATE TABLE IF NOT EXISTS span_events (
    trace_id VARCHAR, span_id VARCHAR, name VARCHAR, ts_ns BIGINT, attributes JSON
);
CREATE TABLE IF NOT EXISTS samples (
    ts_ms BIGINT, metric VARCHAR, labels MAP(VARCHAR, VARCHAR), value DOUBLE, source VARCHAR
);
CREATE TABLE IF NOT EXISTS model_configs (
    path VARCHAR, model VARCHAR, text VARCHAR   -- Triton config.pbtxt files found in a capture
);
CREATE TABLE IF NOT EXISTS inputs (
    path VARCHAR, format VARCHAR, spans BIGINT, samples BIGINT, problems BIGINT,
    complete BOOLEAN DEFAULT true   -- false from the start of a file's load until its last row is written
);
ALTER TABLE inputs ADD COLUMN IF NOT EXISTS complete BOOLEAN DEFAULT true;  -- stores written before the marker
"""


# Integer keys for joins on ids (two integers compare much faster than two 16- or 32-character strings).
# Ids in the store are lowercase hex, as every reader normalises them; anything else is hashed.
def trace_key(col: str) -> str:
    return f"coalesce(TRY_CAST('0x' || {col} AS UHUGEINT), hash({col})::UHUGEINT)"


def span_key(col: str) -> str:
    return f"CASE WHEN {col} IS NOT NULL THEN coalesce(TRY_CAST('0x' || {col} AS UBIGINT), hash({col})) END"


SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns",
    "duration_ns", "status_code", "status_message", "route", "http_status", "resend_count", "model",
    "peer", "input_size", "attributes", "resource", "source",
)
EVENT_COLUMNS = ("trace_id", "span_id", "name", "ts_ns", "attributes")
# What each table of a triage store must have (a DuckDB file with other tables of these names is not one).
_EXPECTED = {"spans": set(SPAN_COLUMNS), "span_events": set(EVENT_COLUMNS),
             "samples": {"ts_ms", "metric", "labels", "value", "source"}, "model_configs": {"path", "model", "text"},
             "inputs": {"path", "format", "spans", "samples", "problems", "complete"}}

_INT_COLUMNS = {"kind", "start_ns", "end_ns", "duration_ns", "status_code", "http_status", "resend_count",
                "input_size", "ts_ns", "ts_ms"}


def _column(name: str, values) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if name in _INT_COLUMNS and None not in values:
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=object)


def insert_frame(con, table: str, columns: tuple[str, ...], data: dict) -> int:
    """Bulk insert columnar data (a dict of equal-length lists) through ``con`` in one statement; the caller
    holds the writer. Returns the number of rows."""
    first = data.get(columns[0])
    n = len(first) if first is not None else 0
    if n == 0:
        return 0
    frame = {c: _column(c, data[c]) for c in columns}  # noqa: F841  (scanned by DuckDB below)
    cols = ", ".join(columns)
    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM frame")
    return n


# DuckDB's own default is 80% of the machine's memory. triage runs next to the service it diagnoses, so its
# database is capped (TRIAGE_MEMORY_LIMIT: "512MB", "4GB", "1GiB") and spills to a private temporary folder
# beyond that, removed with the store. With 1 GiB a million spans analyse as fast as uncapped
# (benchmarks/RESULTS.md), and a capture larger than memory still loads and analyses.
DEFAULT_MEMORY_LIMIT = "1GiB"
MIN_MEMORY_LIMIT = 64 << 20  # below this DuckDB cannot pin the blocks that stage attribution needs
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def memory_limit() -> str:
    """The cap as the user set it (TRIAGE_MEMORY_LIMIT) or the default."""
    return os.environ.get("TRIAGE_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT


def memory_limit_bytes(text: str) -> int:
    """'1GiB', '512MB', '4 GB' → bytes; ValueError naming TRIAGE_MEMORY_LIMIT for anything else or too small."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m and m.group(2).lower()
    if not m or unit not in _UNITS:
        raise UsageError(f"TRIAGE_MEMORY_LIMIT={text!r} is not a size (e.g. 512MB, 4GB, 1GiB)")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n < MIN_MEMORY_LIMIT:
        raise UsageError(f"TRIAGE_MEMORY_LIMIT={text!r} is below the 64 MiB that analysis needs")
    return n


def out_of_memory(exc: BaseException) -> str | None:
    """What to tell the user when DuckDB ran out of its memory limit (None for any other error)."""
    if not isinstance(exc, duckdb.OutOfMemoryException):
        return None
    return (f"the database needed more than its memory limit ({memory_limit()}, TRIAGE_MEMORY_LIMIT) even after spilling "
            f"to disk; raise it, e.g. TRIAGE_MEMORY_LIMIT=4GB. DuckDB said: {str(exc).splitlines()[0]}")


class StoreError(UsageError):
    """A --db file that cannot be used: held by another process, not a DuckDB database, damaged, or not
    a triage store. The message names the file."""


def _open_error(path: str, exc: BaseException) -> StoreError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "lock" in msg.lower():
        pid = re.search(r"PID (\d+)", msg)
        who = f"another triage (or another DuckDB program, PID {pid.group(1)})" if pid else "another triage"
        return StoreError(f"{path}: {who} holds this database open; wait for it to finish, or use another --db")
    if "not a valid DuckDB database" in msg:
        return StoreError(f"{path}: not a DuckDB database (is --db pointing at the wrong file?)")
    return StoreError(f"{path}: cannot open the database (damaged or truncated?): {msg}")


def describe(exc: BaseException) -> str:
    """An error as the user should read it: what to change when it is the memory limit."""
    return out_of_memory(exc) or f"{type(exc).__name__}: {exc}"


class Store:
    """One DuckDB database. ``Store()`` is in memory; ``Store(path)`` persists to a file."""

    def __init__(self, path: str | Path | None = None):
        limit = memory_limit_bytes(memory_limit())  # a bad TRIAGE_MEMORY_LIMIT fails before anything is opened
        self.path = str(path) if path else ":memory:"
        if path:
            if Path(path).is_dir():
                raise StoreError(f"{path}: is a folder; --db takes a database file")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from None
        # DuckDB checkpoints (and compresses) every 16 MiB of writes by default, and each checkpoint costs in
        # proportion to everything stored so far: loading 1M spans spent 2 of its 3 insert seconds there.
        # One checkpoint per GiB keeps bulk loads linear; a file store is checkpointed after each ingest.
        self._con.execute("SET checkpoint_threshold = '1GiB'")
        self._con.execute(f"SET memory_limit = '{limit}B'")
        # DuckDB creates its spill folder world-readable; ours is made private first (0700) and removed with
        # the store (on close, when collected, or at exit)
        self.spill_dir = Path(tempfile.mkdtemp(prefix="triage-spill-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.spill_dir, True)
        spill = str(self.spill_dir / "duckdb").replace("'", "''")
        self._con.execute(f"SET temp_directory = '{spill}'")
        self._lock = threading.Lock()
        self._inputs: dict[str, bool] | None = None  # path → loaded completely (see begin_input)
        try:
            self._con.execute(SCHEMA)
            self._check_tables()
        except (duckdb.Error, StoreError) as exc:
            self._con.close()
            self._cleanup()
            raise exc if isinstance(exc, StoreError) else _open_error(self.path, exc) from None

    def _check_tables(self) -> None:
        if self.path != ":memory:":  # a file cut short (copied while written, disk full) lacks blocks it lists
            block_size, blocks = self._con.execute(
                "SELECT block_size, total_blocks FROM pragma_database_size() WHERE database_name = current_database()"
            ).fetchone()
            if os.path.getsize(self.path) < block_size * blocks:
                raise StoreError(f"{self.path}: the database is truncated ({os.path.getsize(self.path):,} bytes, its "
                                 f"index lists {block_size * blocks:,}); damaged or truncated, cannot be read")
        rows = self._con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                 "WHERE table_schema = 'main' AND table_catalog = current_database()").fetchall()
        have: dict[str, set] = {}
        for table, column in rows:
            have.setdefault(table, set()).add(column)
        for table, columns in _EXPECTED.items():
            missing = columns - have.get(table, set())
            if missing:
                raise StoreError(f"{self.path}: a DuckDB database, but not a triage store (table {table} lacks "
                                 f"{', '.join(sorted(missing))})")

    # -- readers -------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for the calling thread (DuckDB connections must not be shared across threads)."""
        return self._con.cursor()

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        cur = self.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    def columns(self, sql: str, params: list | tuple | None = None) -> dict[str, np.ndarray]:
        """The result as numpy columns: text as object arrays with None for NULL; numbers as arrays, masked
        where NULL."""
        cur = self.cursor()
        try:
            cols = cur.execute(sql, params or []).fetchnumpy()
        finally:
            cur.close()
        for name, col in cols.items():
            if col.dtype == object:
                values = np.asarray(np.ma.getdata(col), dtype=object)
                values[np.ma.getmaskarray(col)] = None
                cols[name] = values
        return cols

    def scalar(self, sql: str, params: list | tuple | None = None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    # -- the writer ----------------------------------------------------------------------
    def execute(self, sql: str, params: list | tuple | None = None) -> None:
        with self._lock:
            self._con.execute(sql, params or [])

    def insert_columns(self, table: str, columns: tuple[str, ...], data: dict[str, list]) -> int:
        """Bulk insert columnar data (a dict of equal-length lists) in one statement."""
        with self._lock:
            return insert_frame(self._con, table, columns, data)

    @contextmanager
    def writer(self):
        """The connection, held for a multi-statement write."""
        with self._lock:
            yield self._con

    @contextmanager
    def transaction(self):
        """The connection, held, inside a transaction: committed when the block ends, rolled back (and the
        error raised) when it raises."""
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    # -- per-input load markers (a --db store that a killed ingest left half-written) --------------------------
    # A file store writes an input's ``inputs`` row incomplete before its first row and completes it after its
    # last; an in-memory store, which a killed process takes with it, writes the row once, complete. Which
    # inputs the store holds is read once and then kept here (one writer per store: the file is locked).
    def _inputs_state(self) -> dict[str, bool]:
        if self._inputs is None:
            self._inputs = {p: bool(c) for p, c in self.query("SELECT path, complete FROM inputs")}
        return self._inputs

    def has_input(self, path: str) -> bool:
        """Whether ``path`` was loaded completely into this store before."""
        return self._inputs_state().get(path) is True

    def begin_input(self, path: str) -> dict | None:
        """Mark ``path`` as being loaded (until ``complete_input``). When an earlier load of it never completed
        (the process was killed), first remove what that load wrote and return how much that was, so nothing
        is counted twice."""
        state = self._inputs_state()
        removed = None
        if state.get(path) is False:
            with self.transaction() as con:
                removed = {"path": path,
                           "spans": con.execute("SELECT count(*) FROM spans WHERE source = ?", [path]).fetchone()[0],
                           "samples": con.execute("SELECT count(*) FROM samples WHERE source = ?", [path]).fetchone()[0]}
                # events carry no source: those of this input's spans go, unless another input has the same span
                con.execute("DELETE FROM span_events e USING spans s WHERE s.source = ? AND e.trace_id = s.trace_id "
                            "AND e.span_id = s.span_id AND NOT EXISTS (SELECT 1 FROM spans o WHERE o.source <> ? "
                            "AND o.trace_id = e.trace_id AND o.span_id = e.span_id)", [path, path])
                con.execute("DELETE FROM spans WHERE source = ?", [path])
                con.execute("DELETE FROM samples WHERE source = ?", [path])
                con.execute("DELETE FROM model_configs WHERE path = ?", [path])
                con.execute("DELETE FROM inputs WHERE path = ?", [path])
        if self.path != ":memory:":
            self.execute("INSERT INTO inputs (path, complete) VALUES (?, false)", [path])
        state[path] = False
        return removed

    def complete_input(self, path: str, fmt: str, spans: int, samples: int, problems: int) -> None:
        """The load of ``path`` wrote its last row."""
        if self.path == ":memory:":
            self.execute("INSERT INTO inputs (path, format, spans, samples, problems, complete) "
                         "VALUES (?, ?, ?, ?, ?, true)", [path, fmt, spans, samples, problems])
        else:
            self.execute("UPDATE inputs SET format = ?, spans = ?, samples = ?, problems = ?, complete = true "
                         "WHERE path = ? AND NOT complete", [fmt, spans, samples, problems, path])
        self._inputs_state()[path] = True

    def was_interrupted(self, path: str) -> bool:
        """Whether an earlier load of ``path`` into this store began and never completed."""
        return self._inputs_state().get(path) is False

    def complete_inputs(self, con, rows: list[tuple]) -> None:
        """Inputs loaded completely in the caller's transaction on ``con`` (the writer): (path, format, spans,
        samples, problems) each, written as complete rows at once (many small files)."""
        cols = ("path", "format", "spans", "samples", "problems")
        insert_frame(con, "inputs", cols, {c: [r[i] for r in rows] for i, c in enumerate(cols)})
        self._inputs_state().update((r[0], True) for r in rows)

    def insert_samples(self, ts_ms: list, metric: list, labels: list[dict], value: list, source: str) -> int:
        if not ts_ms:
            return 0
        frame = {  # noqa: F841
            "ts_ms": np.asarray(ts_ms, dtype=np.int64),
            "metric": np.asarray(metric, dtype=object),
            "lk": np.asarray([list(d.keys()) for d in labels] + [None], dtype=object)[:-1],
            "lv": np.asarray([list(d.values()) for d in labels] + [None], dtype=object)[:-1],
            "value": np.asarray(value, dtype=np.float64),
        }
        with self._lock:
            self._con.execute(
                "INSERT INTO samples SELECT ts_ms, metric, map(lk::VARCHAR[], lv::VARCHAR[]), value, ? FROM frame",
                [source],
            )
        return len(ts_ms)

    def checkpoint(self) -> None:
        """Make a file store compact and durable (a no-op in memory)."""
        if self.path != ":memory:":
            self.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self._con.close()
        self._cleanup()
