"""Normalised span records, shared by every trace reader.

Readers turn their format into calls of ``SpanColumns.add``; it validates what would corrupt the analysis
(ids, times), promotes the attributes the analyzers need into columns, and accumulates column-wise.
``SpanColumns`` needs no store, so worker processes can fill one and send it back; ``SpanSink`` is the
store-backed flavour that writes in batches through the store's single writer.
"""
from __future__ import annotations

import base64
import binascii
import re

import orjson

_dumps = orjson.dumps

from .problems import Problems
from .store import EVENT_COLUMNS, SPAN_COLUMNS, Store

# attribute key -> (column, priority): the lower priority wins when a span has several keys for one column
PROMOTED: dict[str, tuple[str, int]] = {}
for _col, _keys in (
    ("route", ("http.route", "rpc.method", "url.template")),
    ("http_status", ("http.response.status_code", "http.status_code")),
    ("resend_count", ("http.request.resend_count", "http.resend_count")),
    ("model", ("triton.model_name", "gen_ai.request.model", "model.name", "model_name")),
    ("peer", ("peer.service", "server.address", "net.peer.name", "http.host")),
    ("input_size", ("gen_ai.usage.input_tokens", "app.input_tokens", "input_tokens", "llm.token_count.prompt")),
):
    for _i, _k in enumerate(_keys):
        PROMOTED[_k] = (_col, _i)
# the promoted columns in the spans table's order, and those that hold integers
PROMOTED_COLUMNS = tuple(dict.fromkeys(col for col, _ in PROMOTED.values()))
INT_PROMOTED = ("http_status", "resend_count", "input_size")

# The one place where values meet the store's column types. A value outside its range never reaches DuckDB
# (where it would abort the whole batch): a time outside (0, 2**63) rejects the span; an unknown kind or
# status code is stored as 0 (unspecified / unset); a promoted integer that does not fit its column is left
# out of the column (the attribute JSON keeps it). Each of these is a problem with its place.
INT64_MAX = (1 << 63) - 1
ENUM_RANGES = {"kind": 5, "status_code": 2}  # OTLP SpanKind 0..5, StatusCode 0..2
PROMOTED_RANGES = {"http_status": (-(1 << 31), (1 << 31) - 1),   # INTEGER columns
                   "resend_count": (-(1 << 31), (1 << 31) - 1),
                   "input_size": (-(1 << 63), INT64_MAX)}       # BIGINT
PROMOTED_SQL_TYPES = {"http_status": "INTEGER", "resend_count": "INTEGER", "input_size": "BIGINT"}
JSON_MAX_DEPTH = 64  # attribute values nested deeper are stored as text at that depth (orjson stops at 255)

# The promoted columns in SQL (the paths that render attributes in DuckDB): every promoted key is extracted
# from the attribute JSON in one pass into ``p`` (``json_extract_string(attributes, PROMOTED_PATHS)``), and
# each column takes its highest-priority key that is present and not empty, as ``SpanColumns.add`` does.
PROMOTED_PATHS = "[" + ", ".join("'$.\"" + k + "\"'" for k in PROMOTED) + "]"


def int_text_sql(expr: str, sql_type: str = "BIGINT", strict: bool = False) -> str:
    """SQL: an attribute's text as an integer of the column's type ("200", "200.0" → 200; anything else
    NULL). A number out of the type's range is NULL too (the exact path reports it), or, ``strict``, an
    error: the Arrow path then hands the chunk to the exact path."""
    return f"{'CAST' if strict else 'TRY_CAST'}(TRY_CAST({expr} AS DOUBLE) AS {sql_type})"


def promoted_text_sql(col: str) -> str:
    """SQL: the text of the promoted column ``col`` from ``p``."""
    keys = list(PROMOTED)
    picks = sorted((PROMOTED[k][1], i) for i, k in enumerate(keys, start=1) if PROMOTED[k][0] == col)
    return f"coalesce({', '.join(f'nullif(p[{i}], {chr(39)}{chr(39)})' for _, i in picks)})"


def promoted_sql(strict: bool = False) -> str:
    """SQL: every promoted column from ``p``, as ``expr AS column``, integers cast to their column's type."""
    out = []
    for col in PROMOTED_COLUMNS:
        expr = promoted_text_sql(col)
        if col in INT_PROMOTED:
            expr = int_text_sql(expr, PROMOTED_SQL_TYPES[col], strict)
        out.append(f"{expr} AS {col}")
    return ",\n       ".join(out)

_HEX_ID = {8: re.compile(r"[0-9a-f]{16}").fullmatch, 16: re.compile(r"[0-9a-f]{32}").fullmatch}
_ZERO = {8: "0" * 16, 16: "0" * 32}


def _as_int(v) -> int | None:
    """An integer from an int, a float or their text; None when it is none of these (or NaN/infinite).
    The result may be out of any column's range: ``SpanColumns.add`` decides."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            return None
        return int(f) if f == f and f not in (float("inf"), float("-inf")) else None


def us_to_ns(us) -> int | None:
    """Microseconds (Jaeger, Zipkin: a JSON number) → nanoseconds; None for anything else, NaN or infinite
    (the range is checked where the span is added)."""
    if not isinstance(us, (int, float)) or isinstance(us, bool):
        return None
    v = _as_int(us)
    return None if v is None else v * 1000


def _enum(v, name: str, problems: list) -> int:
    iv = v if type(v) is int else _as_int(v)
    if iv is None:
        return 0
    if 0 <= iv <= ENUM_RANGES[name]:
        return iv
    problems.append(f"{name} {_short(iv)} out of range 0..{ENUM_RANGES[name]}; stored as 0")
    return 0


def _short(v) -> str:
    t = str(v)
    return t if len(t) <= 24 else t[:20] + f"...({len(t)} digits)"


def safe_json(value) -> tuple[str, str | None]:
    """``value`` as JSON text, and what had to change (None when nothing): integers beyond 64 bits become
    their text, values nested deeper than JSON_MAX_DEPTH become their text at that depth."""
    try:
        return _dumps(value, default=str).decode(), None
    except (TypeError, ValueError, RecursionError):
        notes: set[str] = set()
        return _dumps(_sanitize(value, 0, notes), default=str).decode(), "; ".join(sorted(notes))


def _sanitize(v, depth: int, notes: set):
    if type(v) is int and not -(1 << 63) <= v < (1 << 64):
        notes.add("integer beyond 64 bits stored as text")
        return str(v)
    if isinstance(v, (dict, list)):
        if depth >= JSON_MAX_DEPTH:
            notes.add(f"value nested deeper than {JSON_MAX_DEPTH} levels stored as text")
            return _truncated_text(v)
        if isinstance(v, dict):
            return {str(k): _sanitize(x, depth + 1, notes) for k, x in v.items()}
        return [_sanitize(x, depth + 1, notes) for x in v]
    return v


def _truncated_text(v, limit: int = 1024) -> str:
    """A bounded repr of a deep value (repr itself would recurse without end)."""
    out: list[str] = []
    stack = [v]
    while stack and len(out) < limit:
        x = stack.pop()
        if isinstance(x, dict):
            out.append("{")
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, list):
            out.append("[")
            stack.extend(reversed(x))
        else:
            out.append(str(x)[:64])
    return "".join(out) + ("..." if stack or len(out) >= limit else "")


def normalize_id(raw, nbytes: int) -> str | None:
    """A span/trace id as lowercase hex, from hex text (any case), base64 text (Tempo) or raw bytes.
    None when invalid or all zero."""
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray)):
        h = raw.hex() if len(raw) == nbytes else None
    elif isinstance(raw, str):
        h = raw.lower()
        if not _HEX_ID[nbytes](h):
            h = _maybe_base64(raw, nbytes)
    else:
        return None
    return None if h is None or h == _ZERO[nbytes] else h


def _maybe_base64(s: str, nbytes: int) -> str | None:
    try:
        b = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    return b.hex() if len(b) == nbytes else None


class SpanColumns:
    """Spans and events accumulated column-wise (plain lists), with the problems met on the way."""

    def __init__(self, source: str, problems: Problems | None = None):
        self.source = source
        self.problems = problems if problems is not None else Problems()
        self.spans: dict[str, list] = {c: [] for c in SPAN_COLUMNS}
        self.events: dict[str, list] = {c: [] for c in EVENT_COLUMNS}
        self.rejected = 0  # spans refused (invalid id or time); other problems still load the span
        self._bind()

    def _bind(self) -> None:
        """Bound append methods, in column order (SPAN_COLUMNS / EVENT_COLUMNS): the hot path's shortcut."""
        self._app = tuple(self.spans[c].append for c in SPAN_COLUMNS)
        self._ev_app = tuple(self.events[c].append for c in EVENT_COLUMNS)

    def __getstate__(self):  # bound methods do not pickle; rebound on arrival
        state = dict(self.__dict__)
        state.pop("_app", None)
        state.pop("_ev_app", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._bind()

    def __len__(self) -> int:
        return len(self.spans["trace_id"])

    def add(self, trace_id, span_id, parent_span_id, service, resource_json: str, name, kind, start_ns, end_ns,
            status_code, status_message, attributes: dict, events, where) -> bool:
        """Add one span; returns False (and records a problem) when it cannot be used.
        ``where`` is a string or a zero-argument callable producing one (built only on a problem).
        This is the per-span hot path of every reader: keep it flat."""
        tid = normalize_id(trace_id, 16)
        sid = normalize_id(span_id, 8)
        if tid is None or sid is None:
            bad = ("traceId", trace_id) if tid is None else ("spanId", span_id)
            self.problems.add(self.source, _where(where), f"invalid {bad[0]} {str(bad[1])[:40]!r}")
            self.rejected += 1
            return False
        pid = normalize_id(parent_span_id, 8) if parent_span_id else None
        start = start_ns if type(start_ns) is int else _as_int(start_ns)
        end = end_ns if type(end_ns) is int else _as_int(end_ns)
        if start is None or end is None or start <= 0:
            self.problems.add(self.source, _where(where), f"span {sid}: missing or invalid start/end time")
            self.rejected += 1
            return False
        if start > INT64_MAX or end > INT64_MAX or end < -INT64_MAX:
            self.problems.add(self.source, _where(where),
                              f"span {sid}: start/end time out of range ({_short(start)}, {_short(end)} ns; "
                              f"at most 2**63-1); span skipped")
            self.rejected += 1
            return False
        if end < start:
            self.problems.add(self.source, _where(where),
                              f"span {sid}: end before start (negative duration {end - start} ns); duration set to 0")
            end = start
        route = http_status = resend = model = peer = size = None
        if attributes:
            prio = None
            for k, v in attributes.items():
                hit = PROMOTED.get(k)
                if hit is None or v is None or v == "":
                    continue
                col, p = hit
                if prio is None:
                    prio = {}
                elif prio.get(col, 99) <= p:
                    continue
                if col == "route":
                    route = str(v)
                elif col == "model":
                    model = str(v)
                elif col == "peer":
                    peer = str(v)
                else:
                    iv = v if type(v) is int else _as_int(v)
                    if iv is None:
                        continue
                    lo, hi = PROMOTED_RANGES[col]
                    if not lo <= iv <= hi:  # the key still takes its place: a lower-priority key does not fill in
                        self.problems.add(self.source, _where(where), f"span {sid}: {col} value {_short(iv)} "
                                          f"(attribute {k!r}) out of range; not promoted")
                        iv = None
                    if col == "http_status":
                        http_status = iv
                    elif col == "resend_count":
                        resend = iv
                    else:
                        size = iv
                prio[col] = p
        fixes: list[str] = []
        kind = kind if type(kind) is int and 0 <= kind <= 5 else _enum(kind, "kind", fixes)
        status_code = status_code if type(status_code) is int and 0 <= status_code <= 2 else \
            _enum(status_code, "status_code", fixes)
        if attributes:
            try:
                attrs_json = _dumps(attributes, default=str).decode()
            except (TypeError, ValueError, RecursionError):
                attrs_json, note = safe_json(attributes)
                fixes.append(f"attributes: {note}")
        else:
            attrs_json = "{}"
        for fix in fixes:
            self.problems.add(self.source, _where(where), f"span {sid}: {fix}")
        a = self._app
        a[0](tid)
        a[1](sid)
        a[2](pid)
        a[3](service or "unknown")
        a[4](name if type(name) is str else str(name or ""))
        a[5](kind)
        a[6](start)
        a[7](end)
        a[8](end - start)
        a[9](status_code)
        a[10](str(status_message) if status_message else None)
        a[11](route)
        a[12](http_status)
        a[13](resend)
        a[14](model)
        a[15](peer)
        a[16](size)
        a[17](attrs_json)
        a[18](resource_json)
        a[19](self.source)
        if events:
            ev = self._ev_app
            for ev_name, ts, ev_attrs in events:
                ts = ts if type(ts) is int else _as_int(ts)
                if ts is None or not -INT64_MAX <= ts <= INT64_MAX:
                    self.problems.add(self.source, _where(where), f"span {sid}: event {ev_name!r} without a valid time")
                    continue
                ev[0](tid)
                ev[1](sid)
                ev[2](ev_name if type(ev_name) is str else str(ev_name))
                ev[3](ts)
                if ev_attrs:
                    ev_json, note = safe_json(ev_attrs)
                    if note:
                        self.problems.add(self.source, _where(where), f"span {sid}: event {ev_name!r}: {note}")
                else:
                    ev_json = None
                ev[4](ev_json)
        return True

    def clear(self) -> None:
        for d in (self.spans, self.events):
            for k in d:
                d[k] = []
        self._bind()


def _where(where) -> str:
    return where() if callable(where) else where


def resource_json(resource: dict) -> str:
    """The resource as JSON; integers beyond 64 bits and values nested too deep are kept as text."""
    return safe_json(resource)[0]


def resource_columns(resource: dict) -> tuple[str | None, str]:
    """(service.name as text or None, the resource as JSON): what every span of a resource stores."""
    svc = resource.get("service.name")
    return (str(svc) if svc is not None else None), resource_json(resource)


class SpanSink(SpanColumns):
    """SpanColumns that flushes to the store every ``batch_size`` spans."""

    def __init__(self, store: Store, source: str, problems: Problems, batch_size: int = 50_000):
        super().__init__(source, problems)
        self.store = store
        self.batch_size = batch_size
        self.spans_written = 0

    def add(self, *args, **kwargs) -> bool:
        ok = super().add(*args, **kwargs)
        if len(self) >= self.batch_size:
            self.flush()
        return ok

    def write(self, cols: SpanColumns) -> None:
        """Write columns produced elsewhere (e.g. by a worker process)."""
        self.spans_written += self.store.insert_columns("spans", SPAN_COLUMNS, cols.spans)
        self.store.insert_columns("span_events", EVENT_COLUMNS, cols.events)

    def flush(self) -> None:
        self.write(self)
        self.clear()
