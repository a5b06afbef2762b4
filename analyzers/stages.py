"""Stage attribution: every span's exclusive (self) time goes to one stage.

Self time = the span's duration minus the union of its children's intervals (clipped to the span).
Triton's model span carries its queue phase as events (``QUEUE_START`` → the child's ``COMPUTE_START``),
vLLM carries it as ``gen_ai.latency.time_in_queue``: that part of the self time is carved out as
``queue``. Spans are grouped into requests by walking parent links from each root, across services
(a gateway CLIENT span is the parent of Triton's ``InferRequest`` through W3C traceparent).

Outputs (tables, rebuilt by ``build``):
  span_roots(trace_id, span_id, root_id, b, e)   -- b, e: the span clipped to its ancestors
  span_times(trace_id, span_id, parent_span_id, root_id, kind, start_ns, end_ns, stage, self_ns, queue_ns)
  requests(trace_id, root_id, service, route, start_ns, end_ns, duration_ns, error, input_size)
  request_stages(trace_id, root_id, route, stage, ns)
"""
from __future__ import annotations

from dataclasses import dataclass

STAGES = ("request", "preprocess", "queue", "inference", "postprocess", "network", "other")

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


def build(store, rules: tuple[StageRule, ...] = DEFAULT_RULES) -> None:
    """(Re)build span_roots, span_times, requests and request_stages from spans and span_events."""
    from .latency import invalidate

    invalidate(store)
    name_rules = _rule_case(rules)
    msc = MODEL_SERVER_CALL.replace("'", "''")
    # 1. Roots, and every span's interval clipped to its parent's clipped interval, so that work a
    #    callee does after its caller gave up (a timed-out call) or clock skew never inflates a request.
    store.execute("""
CREATE OR REPLACE TABLE span_roots AS
WITH RECURSIVE s AS (
    SELECT * FROM spans QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY duration_ns DESC) = 1
),
tree(trace_id, span_id, root_id, b, e, depth) AS (
    SELECT s.trace_id, s.span_id, s.span_id, s.start_ns, s.end_ns, 0 FROM s
    WHERE s.parent_span_id IS NULL
       OR (s.kind IN (2, 5) AND NOT EXISTS (SELECT 1 FROM s p
                                            WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id))
    UNION
    SELECT c.trace_id, c.span_id, t.root_id, greatest(c.start_ns, t.b), greatest(least(c.end_ns, t.e), greatest(c.start_ns, t.b)), t.depth + 1
    FROM s c JOIN tree t ON c.trace_id = t.trace_id AND c.parent_span_id = t.span_id
    WHERE t.depth < 64
)
SELECT trace_id, span_id, min(root_id) AS root_id, max(b) AS b, min(e) AS e FROM tree GROUP BY ALL
""")
    # 2. Exclusive time per span over the clipped intervals, its stage, and its queue carve-out.
    store.execute(f"""
CREATE OR REPLACE TABLE span_times AS
WITH s AS (
    SELECT x.*, r.root_id, r.b, r.e FROM spans x JOIN span_roots r USING (trace_id, span_id)
    QUALIFY row_number() OVER (PARTITION BY x.trace_id, x.span_id ORDER BY x.duration_ns DESC) = 1
),
ev AS (
    SELECT trace_id, span_id,
           min(ts_ns) FILTER (WHERE name = 'QUEUE_START') AS queue_start,
           min(ts_ns) FILTER (WHERE name = 'COMPUTE_START') AS compute_start
    FROM span_events GROUP BY ALL
),
kid AS (
    SELECT p.trace_id, p.span_id AS pid, c.b AS cs, c.e AS ce,
           coalesce(cev.compute_start, c.start_ns) AS child_compute_start
    FROM s c JOIN s p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    LEFT JOIN ev cev ON cev.trace_id = c.trace_id AND cev.span_id = c.span_id
),
runs AS (
    SELECT *, max(ce) OVER (PARTITION BY trace_id, pid ORDER BY cs, ce
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
    FROM kid WHERE ce > cs
),
islands AS (
    SELECT *, sum(CASE WHEN prev_end IS NULL OR cs > prev_end THEN 1 ELSE 0 END)
              OVER (PARTITION BY trace_id, pid ORDER BY cs, ce ROWS UNBOUNDED PRECEDING) AS grp
    FROM runs
),
covered AS (
    SELECT trace_id, pid, sum(e - b) AS covered_ns
    FROM (SELECT trace_id, pid, grp, min(cs) AS b, max(ce) AS e FROM islands GROUP BY ALL) GROUP BY ALL
),
first_compute AS (
    SELECT trace_id, pid, min(child_compute_start) AS compute_start, count(*) AS n_children FROM kid GROUP BY ALL
),
classified AS (
    SELECT s.trace_id, s.span_id, s.parent_span_id, s.root_id, s.kind, s.b, s.e,
           greatest((s.e - s.b) - coalesce(cv.covered_ns, 0), 0) AS self_ns,
           CASE
             WHEN ev.compute_start IS NOT NULL AND ev.queue_start IS NULL THEN 'inference'
             WHEN ev.queue_start IS NOT NULL THEN 'request'
             WHEN s.name = 'InferRequest' THEN 'request'
             WHEN json_extract(s.attributes, '$."gen_ai.latency.time_in_model_forward"') IS NOT NULL THEN 'inference'
             WHEN s.kind IN (3, 4) AND fc.n_children IS NULL
                  AND regexp_matches(lower(concat_ws(' ', s.name, s.peer, s.route,
                        json_extract_string(s.attributes, '$."url.full"'),
                        json_extract_string(s.attributes, '$."http.url"'))), '{msc}') THEN 'inference'
             WHEN s.kind IN (3, 4) THEN 'network'
             {name_rules}
             WHEN s.kind IN (2, 5) THEN 'request'
             ELSE 'other'
           END AS stage,
           CASE
             WHEN ev.queue_start IS NOT NULL THEN
               least(coalesce(fc.compute_start, s.e), s.e) - greatest(ev.queue_start, s.b)
             WHEN json_extract(s.attributes, '$."gen_ai.latency.time_in_queue"') IS NOT NULL THEN
               CAST(TRY_CAST(json_extract_string(s.attributes, '$."gen_ai.latency.time_in_queue"') AS DOUBLE) * 1e9 AS BIGINT)
             ELSE 0
           END AS queue_raw_ns
    FROM s
    LEFT JOIN covered cv ON cv.trace_id = s.trace_id AND cv.pid = s.span_id
    LEFT JOIN ev ON ev.trace_id = s.trace_id AND ev.span_id = s.span_id
    LEFT JOIN first_compute fc ON fc.trace_id = s.trace_id AND fc.pid = s.span_id
)
SELECT trace_id, span_id, parent_span_id, root_id, kind, b AS start_ns, e AS end_ns, stage, self_ns,
       least(greatest(coalesce(queue_raw_ns, 0), 0), self_ns) AS queue_ns
FROM classified
""")
    store.execute("""
CREATE OR REPLACE TABLE requests AS
SELECT r.trace_id, r.span_id AS root_id, r.service,
       r.service || ' ' || CASE WHEN r.route IS NULL OR contains(r.name, r.route) THEN r.name
                                ELSE r.name || ' ' || r.route END AS route,
       r.start_ns, r.end_ns, r.duration_ns,
       (r.status_code = 2 OR coalesce(r.http_status, 0) >= 500) AS error,
       r.input_size
FROM spans r
JOIN (SELECT DISTINCT trace_id, root_id FROM span_roots) k ON k.trace_id = r.trace_id AND k.root_id = r.span_id
QUALIFY row_number() OVER (PARTITION BY r.trace_id, r.span_id ORDER BY r.duration_ns DESC) = 1
""")
    store.execute("""
CREATE OR REPLACE TABLE request_stages AS
WITH parts AS (
    SELECT trace_id, root_id, stage, self_ns - queue_ns AS ns FROM span_times
    UNION ALL
    SELECT trace_id, root_id, 'queue', queue_ns FROM span_times WHERE queue_ns > 0
)
SELECT p.trace_id, p.root_id, q.route, p.stage, sum(p.ns)::BIGINT AS ns
FROM parts p JOIN requests q ON q.trace_id = p.trace_id AND q.root_id = p.root_id
GROUP BY ALL
""")
