"""Generate a realistic OTLP JSON-lines capture (the Collector's file exporter layout) of N spans:
6 spans per trace (gateway SERVER → tokenize → CLIENT → Triton InferRequest → model span with queue events →
compute with compute events), attributes on every span, events on the Triton spans. One line per export
batch, two resources (gateway, triton) per line, as a Collector batching both services would write."""
from __future__ import annotations

import os
import random
from pathlib import Path

import orjson

TRACES_PER_LINE = 100
T0 = 1_796_029_103_000_000_000


def _kv(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _resource(service):
    return {"attributes": [_kv("service.name", service), _kv("telemetry.sdk.language", "python"),
                           _kv("deployment.environment", "prod")]}


def _trace(rng: random.Random, t: int):
    tid = os.urandom(16).hex()
    ids = [os.urandom(8).hex() for _ in range(6)]
    tokens = rng.choice((16, 32, 64, 128, 512))
    tok = int(tokens * 20_000 * rng.uniform(0.8, 1.2))
    queue = int(rng.expovariate(1 / 5e6))
    comp = int(rng.uniform(3e6, 12e6))
    t_tok = t + 100_000
    t_cl = t_tok + tok + 50_000
    t_inf = t_cl + 300_000
    t_q = t_inf + 60_000
    t_c = t_q + queue
    t_ce = t_c + comp
    t_end = t_ce + 500_000
    def span(i, parent, name, kind, start, end, attrs, events=()):
        d = {"traceId": tid, "spanId": ids[i], "name": name, "kind": kind, "startTimeUnixNano": str(start),
             "endTimeUnixNano": str(end), "attributes": attrs, "status": {}}
        if parent is not None:
            d["parentSpanId"] = ids[parent]
        if events:
            d["events"] = [{"name": n, "timeUnixNano": str(ts)} for n, ts in events]
        return d
    gw = [
        span(0, None, "POST /v1/classify", 2, t, t_end, [_kv("http.request.method", "POST"), _kv("http.route", "/v1/classify"),
             _kv("http.response.status_code", 200), _kv("app.input_tokens", tokens)]),
        span(1, 0, "tokenize", 1, t_tok, t_tok + tok, [_kv("app.input_tokens", tokens)]),
        span(2, 0, "POST triton /v2/models/clf/infer", 3, t_cl, t_ce + 400_000, [
             _kv("http.request.method", "POST"), _kv("server.address", "127.0.0.1"), _kv("server.port", 8000),
             _kv("http.response.status_code", 200)]),
    ]
    tr = [
        span(3, 2, "InferRequest", 2, t_inf, t_ce + 100_000, [], (("HTTP_RECV_START", t_inf), ("HTTP_RECV_END", t_inf + 20_000),
             ("HTTP_SEND_START", t_ce + 60_000), ("HTTP_SEND_END", t_ce + 90_000))),
        span(4, 3, "clf", 2, t_q - 10_000, t_ce + 30_000, [_kv("triton.model_name", "clf"), _kv("triton.model_version", 1)],
             (("REQUEST_START", t_q - 10_000), ("QUEUE_START", t_q), ("REQUEST_END", t_ce + 30_000))),
        span(5, 4, "compute", 2, t_c, t_ce, [], (("COMPUTE_START", t_c), ("COMPUTE_INPUT_END", t_c + 100_000),
             ("COMPUTE_OUTPUT_START", t_ce - 100_000), ("COMPUTE_END", t_ce))),
    ]
    return gw, tr


def write_capture(path: Path, n_spans: int, seed: int = 7) -> int:
    """Write about ``n_spans`` spans (a multiple of 6) and return the exact count written."""
    rng = random.Random(seed)
    n_traces = n_spans // 6
    written = 0
    t = T0
    with open(path, "wb") as fh:
        for first in range(0, n_traces, TRACES_PER_LINE):
            gws, trs = [], []
            for _ in range(min(TRACES_PER_LINE, n_traces - first)):
                t += int(rng.expovariate(1 / 2e6))
                g, r = _trace(rng, t)
                gws += g
                trs += r
            line = {"resourceSpans": [
                {"resource": _resource("gateway"), "scopeSpans": [{"scope": {"name": "gateway"}, "spans": gws}]},
                {"resource": _resource("triton"), "scopeSpans": [{"scope": {"name": "triton-server"}, "spans": trs}]}]}
            fh.write(orjson.dumps(line) + b"\n")
            written += len(gws) + len(trs)
    return written
