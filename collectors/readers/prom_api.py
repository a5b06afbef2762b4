"""Prometheus HTTP API JSON as saved with curl: ``query`` (vector, scalar) and ``query_range`` (matrix)
responses. Timestamps are seconds; values are strings ("NaN", "+Inf" included)."""
from __future__ import annotations

from .. import streams
from ..parallel import Pool
from ..problems import Problems
from ..salvage import document_of
from ..sniff import looks_json
from ..spans import SpanSink

FORMAT = "prometheus-api-json"


def sniff(head: bytes, size: int) -> bool:
    return looks_json(head) and b'"resultType"' in head


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
    """The samples of the response into the sink's store; returns how many."""
    doc = document_of(src, sink.problems, is_prom_api, "not a Prometheus API response (no data.resultType)")
    if doc is None:
        return 0
    return sink.store.insert_samples(*parse(doc, sink.source, sink.problems), source=sink.source)


def is_prom_api(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "resultType" in doc["data"]


def parse(doc: dict, source: str, problems: Problems):
    ts, names, labels, values = [], [], [], []
    data = doc["data"]
    if doc.get("status") not in (None, "success"):
        problems.add(source, "status", f"query failed: {doc.get('errorType')}: {doc.get('error')}")
    rtype, result = data.get("resultType"), data.get("result")
    if rtype == "scalar" and isinstance(result, list):
        result = [{"metric": {"__name__": "scalar"}, "value": result}]
    if not isinstance(result, list):
        problems.add(source, "data.result", f"unsupported resultType {rtype!r}")
        return ts, names, labels, values
    for i, series in enumerate(result):
        if not isinstance(series, dict):
            problems.add(source, f"data.result[{i}]", "not an object")
            continue
        metric = dict(series.get("metric") or {})
        name = str(metric.pop("__name__", "") or "query_result")
        lab = {str(k): str(v) for k, v in metric.items()}
        points = series.get("values") if rtype == "matrix" else [series.get("value")]
        for j, pt in enumerate(points or []):
            try:
                t, v = pt
                t_ms, val = int(round(float(t) * 1000)), float(v)
            except (TypeError, ValueError):
                problems.add(source, f"data.result[{i}].values[{j}]", f"invalid sample {str(pt)[:60]}")
                continue
            ts.append(t_ms)
            names.append(name)
            labels.append(lab)
            values.append(val)
    return ts, names, labels, values
