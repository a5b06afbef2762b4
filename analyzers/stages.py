"""Stage attribution: every span's exclusive (self) time goes to one stage.

Self time = the span's duration minus the union of its children's intervals (clipped to the span).
Triton's model span carries its queue phase as events (``QUEUE_START`` → the child's ``COMPUTE_START``),
vLLM carries it as ``gen_ai.latency.time_in_queue``: that part of the self time is carved out as
``queue``, and then vLLM's ``time_in_model_prefill`` / ``time_in_model_decode`` as ``prefill`` / ``decode``
(``_LLM_PHASES``). Spans are grouped into requests by walking parent links from each root, across services
(a gateway CLIENT span is the parent of Triton's ``InferRequest`` through W3C traceparent).

Outputs (rebuilt by ``build``):
  span_roots(trace_id, span_id, root_id, b, e)   -- a view; b, e: the span clipped to its ancestors
  span_times(trace_id, span_id, parent_span_id, root_id, kind, start_ns, end_ns, stage, self_ns, queue_ns)
  requests(trace_id, root_id, service, route, start_ns, end_ns, duration_ns, error, input_size, model,
           instance)
                                                 -- model: one a span of the request names (triton.model_name...)
                                                 -- instance: the root's service.instance.id, else its service
  request_stages(trace_id, root_id, route, stage, ns)
  stage_sources(name, stage, source, spans)      -- how each span name's stage was assigned
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

from triage.collectors.store import span_key, trace_key

STAGES = ("request", "preprocess", "queue", "prefill", "decode", "inference", "postprocess", "network", "other")

# Names of calls that reach a model server: a CLIENT span matching this with no traced callee is inference.
MODEL_SERVER_CALL = r"(/v2/models|/infer\b|:predict|/predict|/generate|/v1/completions|/v1/chat|/v1/embeddings|triton|torchserve|kserve|vllm|\btgi\b)"


@dataclass(frozen=True)
class StageRule:
    """Spans whose (lower-cased) name matches ``pattern`` (a regular expression) go to ``stage``."""

    pattern: str
    stage: str
    kinds: tuple[int, ...] = ()  # restrict to these OTLP span kinds; empty = any


# Order matters: the first match wins. User overrides from triage.toml are put in front.
DEFAULT_RULES: tuple[StageRule, ...] = (
    StageRule(r"tokeni[sz]|preprocess|pre_process|pre-process|resiz|decode_image|image_decode|feature|embed_input|normali[sz]e_input|prepare_input|transform_input", "preprocess", (0, 1)),
    StageRule(r"postprocess|post_process|post-process|detokeni|^format|serializ|decode_output|\bnms\b", "postprocess", (0, 1)),
    StageRule(r"queue|enqueue|wait_for_batch|batch_wait|admission", "queue", (0, 1)),
    StageRule(r"infer|predict|forward|generate|model_exec|session\.run|onnx|execute_model|^compute$", "inference", (0, 1)),
)


def _rule_case(rules: tuple[StageRule, ...]) -> str:
    """A SQL CASE expression for the name rules (patterns are quoted as SQL literals)."""
    parts = []
    for r in rules:
        pat = r.pattern.replace("'", "''")
        kinds = f" AND s.kind IN ({', '.join(map(str, r.kinds))})" if r.kinds else ""
        parts.append(f"WHEN regexp_matches(lower(s.name), '{pat}'){kinds} THEN '{r.stage}'")
    return "\n".join(parts)


# Work tables (temporary, on the writer's connection): spans keyed by integers, so that the joins, the
# recursion and the windows below compare two integers instead of two 16- or 32-character strings.
_KEYED = f"""
CREATE OR REPLACE TEMP TABLE _st_spans AS
SELECT {trace_key('trace_id')} AS t, {span_key('span_id')} AS sid, {span_key('parent_span_id')} AS pid,
       trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns, duration_ns, status_code,
       http_status, input_size, peer, route, model,
       CASE WHEN parent_span_id IS NULL OR kind IN (2, 5)   -- only these can be roots
            THEN coalesce(json_extract_string(resource, '$."service.instance.id"'), service) END AS instance,
       -- the few attributes stage attribution reads, parsed only where they can be
       CASE WHEN contains(attributes, 'gen_ai.latency') OR contains(attributes, 'url') THEN attributes END AS attrs
FROM spans
"""
_DEDUPLICATE = """
CREATE OR REPLACE TEMP TABLE _st_spans AS
SELECT * FROM _st_spans QUALIFY row_number() OVER (PARTITION BY t, sid ORDER BY duration_ns DESC) = 1
"""
# Roots, and every span's interval clipped to its parent's clipped interval, so that work a callee does
# after its caller gave up (a timed-out call) or clock skew never inflates a request. A span has one
# parent, so it is reached at most once (cycles are never reached from a root); depth is capped anyway.
_TREE = """
CREATE OR REPLACE TEMP TABLE _st_tree AS
WITH RECURSIVE tree(t, sid, root, root_id, b, e, depth) AS (
    SELECT s.t, s.sid, s.sid, s.span_id, s.start_ns, s.end_ns, 0 FROM _st_spans s
    WHERE s.pid IS NULL
       OR (s.kind IN (2, 5) AND NOT EXISTS (SELECT 1 FROM _st_spans p WHERE p.t = s.t AND p.sid = s.pid))
    UNION ALL
    SELECT c.t, c.sid, t.root, t.root_id, greatest(c.start_ns, t.b),
           greatest(least(c.end_ns, t.e), greatest(c.start_ns, t.b)), t.depth + 1
    FROM _st_spans c JOIN tree t ON c.t = t.t AND c.pid = t.sid
    WHERE t.depth < 64
)
SELECT t, sid, root, root_id, b, e FROM tree
"""
# Triton's queue phase: QUEUE_START on the request span, COMPUTE_START on its model child.
_EVENTS = f"""
CREATE OR REPLACE TEMP TABLE _st_events AS
SELECT {trace_key('trace_id')} AS t, {span_key('span_id')} AS sid,
       min(ts_ns) FILTER (WHERE name = 'QUEUE_START') AS queue_start,
       min(ts_ns) FILTER (WHERE name = 'COMPUTE_START') AS compute_start
FROM span_events WHERE name IN ('QUEUE_START', 'COMPUTE_START') GROUP BY ALL
"""
# Per parent: the length of the union of its children's clipped intervals (children sorted by start, each
# adds what reaches past the furthest end so far), the first child's compute start, the number of children.
_CHILDREN = """
CREATE OR REPLACE TEMP TABLE _st_children AS
WITH kid AS (
    SELECT c.t, c.pid, r.b AS cs, r.e AS ce, coalesce(ev.compute_start, c.start_ns) AS child_compute_start
    FROM _st_spans c JOIN _st_tree r ON r.t = c.t AND r.sid = c.sid
    LEFT JOIN _st_events ev ON ev.t = c.t AND ev.sid = c.sid
    WHERE c.pid IS NOT NULL
),
w AS (
    SELECT *, max(ce) OVER (PARTITION BY t, pid ORDER BY cs, ce
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
    FROM kid
)
SELECT t, pid AS sid,
       sum(CASE WHEN ce > cs THEN greatest(0, ce - greatest(cs, coalesce(prev_end, cs))) ELSE 0 END) AS covered_ns,
       min(child_compute_start) AS compute_start, count(*) AS n_children
FROM w GROUP BY ALL
"""
# Name rules, evaluated once per distinct (name, kind), with an integer id the per-span tables carry instead
# of the name.
_NAMES = """
CREATE OR REPLACE TEMP TABLE _st_names AS
SELECT row_number() OVER () AS nid, name, kind,
       CASE {name_rules} WHEN s.kind IN (2, 5) THEN 'request' ELSE 'other' END AS stage,
       CASE {source_rules} WHEN s.kind IN (2, 5) THEN 'structure' ELSE 'none' END AS source
FROM (SELECT DISTINCT name, kind FROM _st_spans) s
"""
# Exclusive time per span, its stage, and its queue carve-out. Name rules are evaluated once per distinct
# (name, kind) and the model-server test once per distinct client call, not once per span.
_SPAN_TIMES = """
CREATE OR REPLACE TEMP TABLE _st_times AS
WITH a AS (
    SELECT s.*, r.root, r.root_id, r.b, r.e,
           json_extract(s.attrs, '$."gen_ai.latency.time_in_model_forward"') IS NOT NULL AS forward_attr,
           TRY_CAST(json_extract_string(s.attrs, '$."gen_ai.latency.time_in_queue"') AS DOUBLE) AS queue_attr_s,
           -- the call's URL is read for client spans only: nothing else joins on it
           CASE WHEN s.kind IN (3, 4) THEN json_extract_string(s.attrs, '$."url.full"') END AS url_full,
           CASE WHEN s.kind IN (3, 4) THEN json_extract_string(s.attrs, '$."http.url"') END AS http_url
    FROM _st_spans s JOIN _st_tree r USING (t, sid)
),
calls AS (
    SELECT name, peer, route, url_full, http_url,
           regexp_matches(lower(concat_ws(' ', name, peer, route, url_full, http_url)), '{msc}') AS model_call
    FROM (SELECT DISTINCT name, peer, route, json_extract_string(attrs, '$."url.full"') AS url_full,
                 json_extract_string(attrs, '$."http.url"') AS http_url
          FROM _st_spans WHERE kind IN (3, 4))
),
classified AS (
    SELECT a.t, a.sid, a.root, a.trace_id, a.span_id, a.parent_span_id, a.root_id, a.kind, a.b, a.e,
           (a.kind IN (3, 4) AND coalesce(c.model_call, false)) AS model_call, n.nid,
           greatest((a.e - a.b) - coalesce(k.covered_ns, 0), 0) AS self_ns,
           CASE
             WHEN ev.compute_start IS NOT NULL AND ev.queue_start IS NULL THEN 'inference'
             WHEN ev.queue_start IS NOT NULL THEN 'request'
             WHEN a.name = 'InferRequest' THEN 'request'
             WHEN a.forward_attr THEN 'inference'
             WHEN a.kind IN (3, 4) AND k.n_children IS NULL AND c.model_call THEN 'inference'
             WHEN a.kind IN (3, 4) THEN 'network'
             ELSE n.stage
           END AS stage,
           CASE
             WHEN ev.compute_start IS NOT NULL OR ev.queue_start IS NOT NULL OR a.name = 'InferRequest'
                  OR a.forward_attr OR a.kind IN (3, 4) THEN 'structure'
             ELSE n.source
           END AS stage_source,
           CASE
             WHEN ev.queue_start IS NOT NULL THEN
               least(coalesce(k.compute_start, a.e), a.e) - greatest(ev.queue_start, a.b)
             WHEN a.queue_attr_s IS NOT NULL THEN TRY_CAST(a.queue_attr_s * 1e9 AS BIGINT)  -- inf, NaN, 1e300: none
             ELSE 0
           END AS queue_raw_ns
    FROM a
    LEFT JOIN _st_children k USING (t, sid)
    LEFT JOIN _st_events ev USING (t, sid)
    JOIN _st_names n ON n.name = a.name AND n.kind = a.kind
    LEFT JOIN calls c ON a.kind IN (3, 4) AND c.name = a.name AND c.peer IS NOT DISTINCT FROM a.peer
                      AND c.route IS NOT DISTINCT FROM a.route AND c.url_full IS NOT DISTINCT FROM a.url_full
                      AND c.http_url IS NOT DISTINCT FROM a.http_url
)
SELECT t, root, trace_id, span_id, parent_span_id, root_id, kind, b AS start_ns, e AS end_ns, stage, self_ns,
       least(greatest(coalesce(queue_raw_ns, 0), 0), self_ns) AS queue_ns, stage_source, sid, model_call, nid
FROM classified
"""
# Stages by position: work a service does inside the request, named by no rule, goes by where it sits
# against that service's call(s) to the model server: before the first → preprocess, after the last →
# postprocess (a span around the call stays what it was). Only the few unnamed spans are updated.
_BY_POSITION = """
UPDATE _st_times SET stage = p.stage, stage_source = 'position'
FROM (
    SELECT x.t, x.sid, CASE WHEN x.end_ns <= m.mb THEN 'preprocess' ELSE 'postprocess' END AS stage
    FROM (SELECT * FROM _st_times WHERE stage_source = 'none' AND kind IN (0, 1)) x
    JOIN _st_spans s USING (t, sid)
    JOIN (SELECT y.t, y.root, s2.service, min(y.start_ns) AS mb, max(y.end_ns) AS me
          FROM (SELECT * FROM _st_times WHERE model_call OR stage = 'inference') y JOIN _st_spans s2 USING (t, sid)
          GROUP BY ALL) m ON m.t = x.t AND m.root = x.root AND m.service = s.service
    WHERE x.end_ns <= m.mb OR x.start_ns >= m.me
) p
WHERE _st_times.t = p.t AND _st_times.sid = p.sid
"""
# How each span name's stage was assigned (the report's stage_sources): name (a built-in name rule),
# override (a [stages] pattern of triage.toml), position, structure (span kind, Triton events, gen_ai
# attributes), none (no rule and no position: other)
_STAGE_SOURCES = """
CREATE OR REPLACE TABLE stage_sources AS
SELECT n.name, x.stage, x.source, sum(x.spans)::BIGINT AS spans
FROM (SELECT nid, stage, stage_source AS source, count(*) AS spans FROM _st_times GROUP BY ALL) x
JOIN _st_names n USING (nid) GROUP BY ALL
"""
# LLM engines (vLLM's ``llm_request`` span): the generation's prefill and decode phases, from the span's own
# ``gen_ai.latency.time_in_model_prefill`` / ``time_in_model_decode`` (float seconds), are carved out of the
# span's self time after its queue time, each clamped to what is left, so that the request's stages still add
# up to its end-to-end time. What remains of the engine span (arrival to the engine's queue, output handling)
# stays in the span's own stage.
_LLM_PHASES = """
CREATE OR REPLACE TEMP TABLE _st_llm AS
WITH raw AS (
    SELECT t, sid,
           -- TRY_CAST: a value that is not a number, or not a finite one that fits (inf, NaN, 1e300), is none
           greatest(coalesce(TRY_CAST(TRY_CAST(json_extract_string(attrs, '$."gen_ai.latency.time_in_model_prefill"')
                                               AS DOUBLE) * 1e9 AS BIGINT), 0), 0) AS prefill_raw,
           greatest(coalesce(TRY_CAST(TRY_CAST(json_extract_string(attrs, '$."gen_ai.latency.time_in_model_decode"')
                                               AS DOUBLE) * 1e9 AS BIGINT), 0), 0) AS decode_raw
    FROM _st_spans WHERE contains(attrs, 'gen_ai.latency.time_in_model_')
),
fit AS (
    SELECT x.t, x.root, x.sid, least(r.prefill_raw, x.self_ns - x.queue_ns) AS prefill_ns, r.decode_raw,
           x.self_ns - x.queue_ns AS left_ns
    FROM raw r JOIN _st_times x USING (t, sid)
)
SELECT t, root, sid, prefill_ns, least(decode_raw, left_ns - prefill_ns) AS decode_ns FROM fit
"""
_SPAN_TIMES_OUT = """
CREATE OR REPLACE TABLE span_times AS SELECT * EXCLUDE (t, sid, root, model_call, nid) FROM _st_times
"""
_SPAN_ROOTS = """
CREATE OR REPLACE VIEW span_roots AS
SELECT trace_id, span_id, root_id, start_ns AS b, end_ns AS e FROM span_times
"""
_REQUESTS = """
CREATE OR REPLACE TEMP TABLE _st_requests AS
SELECT r.t, r.sid AS root, r.trace_id, r.span_id AS root_id, r.service,
       r.service || ' ' || CASE WHEN r.route IS NULL OR contains(r.name, r.route) THEN r.name
                                ELSE r.name || ' ' || r.route END AS route,
       r.start_ns, r.end_ns, r.duration_ns,
       (r.status_code = 2 OR coalesce(r.http_status, 0) >= 500) AS error,
       r.input_size, m.model, r.instance
FROM _st_spans r SEMI JOIN (SELECT DISTINCT t, root FROM _st_tree) k ON k.t = r.t AND k.root = r.sid
LEFT JOIN (SELECT k.t, k.root, min(s.model) AS model FROM _st_tree k JOIN _st_spans s USING (t, sid)
           WHERE s.model IS NOT NULL GROUP BY ALL) m ON m.t = r.t AND m.root = r.sid
"""
_REQUESTS_OUT = """
CREATE OR REPLACE TABLE requests AS SELECT * EXCLUDE (t, root) FROM _st_requests
"""
_REQUEST_STAGES = """
CREATE OR REPLACE TABLE request_stages AS
WITH parts AS (
    SELECT x.t, x.root, x.stage, x.self_ns - x.queue_ns - coalesce(l.prefill_ns + l.decode_ns, 0) AS ns
    FROM _st_times x LEFT JOIN _st_llm l USING (t, sid)
    UNION ALL
    SELECT t, root, 'queue', queue_ns FROM _st_times WHERE queue_ns > 0
    UNION ALL
    SELECT t, root, 'prefill', prefill_ns FROM _st_llm WHERE prefill_ns > 0
    UNION ALL
    SELECT t, root, 'decode', decode_ns FROM _st_llm WHERE decode_ns > 0
),
per_stage AS (SELECT t, root, stage, sum(ns)::BIGINT AS ns FROM parts GROUP BY ALL)
SELECT q.trace_id, q.root_id, q.route, p.stage, p.ns
FROM per_stage p JOIN _st_requests q USING (t, root)
"""


# Results computed from the derived tables (latency's breakdowns) stay valid until build() rebuilds them;
# every rule and the report ask for the same ones, so each is computed once per build.
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def per_build(fn):
    @functools.wraps(fn)
    def wrapper(store, *args):
        cache = _CACHE.setdefault(store, {})
        key = (fn.__name__, args)
        if key not in cache:
            cache[key] = fn(store, *args)
        return cache[key]
    return wrapper


def _source_case(rules: tuple[StageRule, ...]) -> str:
    """The same CASE as ``_rule_case``, saying whether a built-in rule or a triage.toml override matched."""
    return "\n".join(line.rsplit(" THEN ", 1)[0] + (" THEN 'name'" if r in DEFAULT_RULES else " THEN 'override'")
                     for r, line in zip(rules, _rule_case(rules).split("\n")))


def stage_sources(store) -> dict[str, dict]:
    """Per span name: its stage(s) and how each was assigned, with span counts."""
    out: dict[str, dict] = {}
    for name, stage, source, n in store.query(
            "SELECT name, stage, source, spans FROM stage_sources ORDER BY name, spans DESC, stage"):
        out.setdefault(name, {})[stage] = {"source": source, "spans": int(n)}
    return out


def build(store, rules: tuple[StageRule, ...] = DEFAULT_RULES) -> None:
    """(Re)build span_times, span_roots (a view of it), requests and request_stages from spans and
    span_events."""
    _CACHE.pop(store, None)
    names = _NAMES.replace("{name_rules}", _rule_case(rules)).replace("{source_rules}", _source_case(rules))
    span_times = _SPAN_TIMES.replace(
        "{msc}", MODEL_SERVER_CALL.replace("'", "''"))
    with store.writer() as con:
        con.execute(_KEYED)
        if con.execute("SELECT count(*) - count(DISTINCT (t, sid)) FROM _st_spans").fetchone()[0]:
            con.execute(_DEDUPLICATE)  # duplicates (counted as a problem at ingest): the longest is used
        for sql in (_TREE, _EVENTS, _CHILDREN, names, span_times, _BY_POSITION, _LLM_PHASES, _STAGE_SOURCES,
                    _SPAN_TIMES_OUT):
            con.execute(sql)
        kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'span_roots' "
                           "AND table_schema = 'main'").fetchone()
        if kind and kind[0] != "VIEW":
            con.execute("DROP TABLE span_roots")  # a store written by an older triage
        for sql in (_SPAN_ROOTS, _REQUESTS, _REQUESTS_OUT, _REQUEST_STAGES):
            con.execute(sql)
        for work in ("_st_spans", "_st_tree", "_st_events", "_st_children", "_st_names", "_st_times", "_st_llm",
                     "_st_requests"):
            con.execute(f"DROP TABLE IF EXISTS {work}")
