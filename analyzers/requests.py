"""The requests table (one row per request, its stage breakdown as columns) and the filter language that
scopes it. Pure: DuckDB queries over ``requests`` / ``request_stages`` / ``span_times`` / ``spans``; no UI.

Filter language: whitespace-separated terms, all of which must hold (AND). A term is ``FIELD OP VALUE``.

  ============  ===============================================================================
  field         meaning
  ============  ===============================================================================
  route         the request's route (``service name route``)       ops: = != ~ !~
  service       the root span's service                            ops: = != ~ !~
  model         the model a span of the request names              ops: = != ~ !~
  instance      the root's service.instance.id (else its service)  ops: = != ~ !~
  trace         the trace id                                       ops: = != ~ !~
  status        ``ok`` or ``error``                                ops: = !=
  duration      end-to-end time (a duration)                       ops: = != > >= < <=
  input         the input size (tokens)                            ops: = != > >= < <=
  calls         number of outgoing (CLIENT) calls                  ops: = != > >= < <=
  stage.NAME    time in stage NAME (preprocess, queue, inference, postprocess, network, request, other)
  attr.KEY      an attribute KEY of any span of the request: = != ~ !~ compare text, > >= < <= numbers
  ============  ===============================================================================

``~`` is "contains" (case-insensitive), ``!~`` its negation. Durations take a unit (ns, us, µs, ms, s);
a bare number is milliseconds. Values with spaces are quoted: ``route~"POST /v1"``. Example:
``route~classify duration>100ms stage.queue>20ms status=error attr.model.version=3``.

Values never enter the SQL text: ``compile_filter`` returns a WHERE clause with ``?`` placeholders and its
parameters. A bad expression raises ``FilterError`` naming the offending token and its position.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from triage.errors import UsageError

from .stages import STAGES

MS = 1e6
TEXT_FIELDS = {"route": "r.route", "service": "r.service", "model": "r.model", "instance": "r.instance",
               "trace": "r.trace_id"}
NUMBER_FIELDS = {"input": "r.input_size", "calls": "r.calls"}
OPS = ("!=", ">=", "<=", "!~", "=", "~", ">", "<")
TEXT_OPS = ("=", "!=", "~", "!~")
NUMBER_OPS = ("=", "!=", ">", ">=", "<", "<=")
UNITS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9}

# Stage columns of the table: (column, stage); 'calls' is the count of outgoing CLIENT/PRODUCER spans.
STAGE_COLUMNS = (("pre", "preprocess"), ("queue", "queue"), ("infer", "inference"), ("post", "postprocess"),
                 ("net", "network"), ("req", "request"), ("other", "other"))
# Columns of a row as ``page`` returns them, and the SQL each sorts by.
COLUMNS = (("start", "r.start_ns"), ("route", "r.route"), ("status", "r.error"), ("e2e_ms", "r.duration_ns")) + \
    tuple((c, f"r.{c}") for c, _ in STAGE_COLUMNS) + \
    (("calls", "r.calls"), ("model", "r.model"), ("input", "r.input_size"), ("trace_id", "r.trace_id"))
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)


class FilterError(UsageError):
    """A filter expression that cannot be compiled; ``token`` and ``pos`` locate the culprit."""

    def __init__(self, message: str, token: str, pos: int):
        super().__init__(f"{message}: {token!r} at column {pos + 1}")
        self.token, self.pos, self.reason = token, pos, message


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str | float
    pos: int


@dataclass(frozen=True)
class Filter:
    text: str
    terms: tuple[Term, ...] = ()
    where: str = "true"
    params: tuple = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.terms)


_TOKEN = re.compile(r'\s*((?:[^\s"]|"(?:[^"\\]|\\.)*")+)')
_TERM = re.compile(r"^([A-Za-z_][\w.\-/:]*)(!=|>=|<=|!~|=|~|>|<)(.*)$", re.S)


def tokens(text: str) -> list[tuple[str, int]]:
    """Split on whitespace outside double quotes; (token, position) pairs."""
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        m = _TOKEN.match(text, i)
        if not m or m.start(1) != i:  # an unterminated quote
            raise FilterError("unterminated quote", text[i:], i)
        out.append((m.group(1), i))
        i = m.end()
    return out


def _unquote(v: str, tok: str, pos: int) -> str:
    if v.startswith('"'):
        if len(v) < 2 or not v.endswith('"'):
            raise FilterError("unterminated quote", tok, pos)
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    if '"' in v:
        raise FilterError("a quote inside a value (quote the whole value)", tok, pos)
    return v


def parse_duration(v: str, tok: str, pos: int) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s)?", v.strip())
    if not m:
        raise FilterError("not a duration (e.g. 100ms, 1.5s, 250us)", tok, pos)
    return float(m.group(1)) * UNITS[m.group(2) or "ms"]


def parse_number(v: str, tok: str, pos: int) -> float:
    try:
        return float(v)
    except ValueError:
        raise FilterError("not a number", tok, pos) from None


def parse(text: str) -> tuple[Term, ...]:
    terms = []
    for tok, pos in tokens(text):
        m = _TERM.match(tok)
        if not m:
            raise FilterError("expected FIELD OP VALUE (ops: = != ~ !~ > >= < <=)", tok, pos)
        name, op, raw = m.group(1), m.group(2), m.group(3)
        if raw == "" or raw[0] in "=<>~!":
            raise FilterError("missing value, or an operator that does not exist", tok, pos)
        value = _unquote(raw, tok, pos)
        low = name.lower()
        if low in TEXT_FIELDS:
            if op not in TEXT_OPS:
                raise FilterError(f"{name} is text: use = != ~ !~", tok, pos)
            terms.append(Term(low, op, value, pos))
        elif low == "status":
            if op not in ("=", "!=") or value.lower() not in ("ok", "error"):
                raise FilterError("status takes = or != and ok or error", tok, pos)
            terms.append(Term("status", op, value.lower(), pos))
        elif low == "duration" or low in NUMBER_FIELDS:
            if op not in NUMBER_OPS:
                raise FilterError(f"{name} is a number: use = != > >= < <=", tok, pos)
            num = parse_duration(value, tok, pos) if low == "duration" else parse_number(value, tok, pos)
            terms.append(Term(low, op, num, pos))
        elif low.startswith("stage."):
            stage = low[len("stage."):]
            if stage not in STAGES:
                raise FilterError(f"unknown stage (one of {', '.join(STAGES)})", tok, pos)
            if op not in NUMBER_OPS:
                raise FilterError("a stage time is a duration: use = != > >= < <=", tok, pos)
            terms.append(Term(low, op, parse_duration(value, tok, pos), pos))
        elif low.startswith("attr.") and len(name) > len("attr."):
            if op in NUMBER_OPS[2:]:
                parse_number(value, tok, pos)
            terms.append(Term("attr." + name[len("attr."):], op, value, pos))  # attribute keys keep their case
        else:
            raise FilterError("unknown field (route service model instance trace status duration input calls "
                              "stage.NAME attr.KEY)", tok, pos)
    return tuple(terms)


def _text_sql(col: str, op: str, value: str, params: list) -> str:
    if op in ("=", "!="):
        params.append(value)
        return f"{col} {'=' if op == '=' else 'IS DISTINCT FROM'} ?"
    params.append(value)
    neg = "NOT " if op == "!~" else ""
    return f"{neg}coalesce(contains(lower({col}), lower(?)), false)"


def compile_filter(text: str) -> Filter:
    """Parse and compile to a WHERE clause over the request rows ``r`` (see ``ROWS_SQL``)."""
    terms = parse(text)
    parts, params = [], []
    for t in terms:
        if t.field in TEXT_FIELDS:
            parts.append(_text_sql(TEXT_FIELDS[t.field], t.op, t.value, params))
        elif t.field == "status":
            parts.append("r.error" if (t.value == "error") == (t.op == "=") else "NOT r.error")
        elif t.field == "duration":
            params.append(t.value)
            parts.append(f"r.duration_ns {'<>' if t.op == '!=' else t.op} ?")
        elif t.field in NUMBER_FIELDS:
            params.append(t.value)
            parts.append(f"{NUMBER_FIELDS[t.field]} {'<>' if t.op == '!=' else t.op} ?")
        elif t.field.startswith("stage."):
            stage = t.field[len("stage."):]
            col = next((c for c, s in STAGE_COLUMNS if s == stage), None)
            params.append(t.value)
            parts.append(f"coalesce(r.{col}, 0) {'<>' if t.op == '!=' else t.op} ?")
        else:
            key = t.field[len("attr."):]
            params.append("$." + '"' + key.replace('"', '\\"') + '"')
            val = "json_extract_string(s.attributes, ?)"
            if t.op in ("=", "~"):
                cond = _text_sql(val, t.op, t.value, params)
            elif t.op in ("!=", "!~"):  # no span of the request has the key with that value
                cond = _text_sql(val, "=" if t.op == "!=" else "~", t.value, params)
            else:
                params.append(float(t.value))
                cond = f"TRY_CAST({val} AS DOUBLE) {t.op} ?"
            neg = "NOT " if t.op in ("!=", "!~") else ""
            parts.append(f"{neg}EXISTS (SELECT 1 FROM span_times st JOIN spans s "
                         f"ON s.trace_id = st.trace_id AND s.span_id = st.span_id "
                         f"WHERE st.trace_id = r.trace_id AND st.root_id = r.root_id AND {cond})")
    return Filter(text.strip(), terms, " AND ".join(f"({p})" for p in parts) or "true", tuple(params))


# One row per request, stage times pivoted into columns (ns).
ROWS_SQL = f"""
SELECT q.trace_id, q.root_id, q.service, q.route, q.start_ns, q.end_ns, q.duration_ns, q.error, q.input_size,
       q.model, q.instance, {", ".join(f"coalesce(p.{c}, 0) AS {c}" for c, _ in STAGE_COLUMNS)},
       coalesce(k.calls, 0) AS calls
FROM requests q
LEFT JOIN (SELECT trace_id, root_id,
                  {", ".join(f"sum(ns) FILTER (WHERE stage = '{s}') AS {c}" for c, s in STAGE_COLUMNS)}
           FROM request_stages GROUP BY ALL) p USING (trace_id, root_id)
LEFT JOIN (SELECT trace_id, root_id, count(*) AS calls FROM span_times WHERE kind IN (3, 4) GROUP BY ALL) k
  USING (trace_id, root_id)
"""


def materialize(store) -> None:
    """Build ``request_rows`` (ROWS_SQL) once per analysis: paging and sorting then read one table."""
    store.execute(f"CREATE OR REPLACE TABLE request_rows AS {ROWS_SQL}")


def count(store, flt: Filter | None = None) -> int:
    flt = flt or Filter("")
    return store.scalar(f"SELECT count(*) FROM request_rows r WHERE {flt.where}", list(flt.params))


def input_mix(store, max_sizes: int = 12) -> list[tuple[int, float]]:
    """The captured request mix: input sizes (tokens) and how often each occurred, most frequent first (the
    load generator replays it; quantize verifies on it)."""
    rows = store.query("""SELECT input_size, count(*) FROM requests WHERE input_size > 0
                          GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?""", [max_sizes])
    return [(int(s), float(n)) for s, n in rows]


def page(store, flt: Filter | None = None, sort: str = "e2e_ms", descending: bool = True,
         offset: int = 0, limit: int = 100) -> list[dict]:
    """Rows ``offset`` .. ``offset + limit`` of the filtered, sorted table; ties broken by trace and root id."""
    flt = flt or Filter("")
    order = dict(COLUMNS).get(sort)
    if order is None:
        raise UsageError(f"unknown column {sort!r} (one of {', '.join(COLUMN_NAMES)})")
    direction = "DESC" if descending else "ASC"
    rows = store.query(f"""
        SELECT * FROM request_rows r WHERE {flt.where}
        ORDER BY {order} {direction} NULLS LAST, r.trace_id, r.root_id LIMIT ? OFFSET ?""",
                       list(flt.params) + [int(limit), int(offset)])
    names = ["trace_id", "root_id", "service", "route", "start_ns", "end_ns", "duration_ns", "error",
             "input_size", "model", "instance"] + [c for c, _ in STAGE_COLUMNS] + ["calls"]
    return [dict(zip(names, r)) for r in rows]


def cohort_where(flt: Filter) -> tuple[str, tuple]:
    """The filter as a condition on ``requests`` rows (aliased ``r``) — for scoping other queries."""
    return f"(r.trace_id, r.root_id) IN (SELECT trace_id, root_id FROM request_rows r WHERE {flt.where})", flt.params
