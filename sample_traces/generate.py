"""Regenerate the bundled sample incidents: ``python -m sample_traces.generate [NAME...]``.

Each incident is simulated (``simulate.py``) and emitted with the real OpenTelemetry SDK: a ``gateway``
TracerProvider and a ``triton`` TracerProvider whose spans join the gateway's traces through a W3C
``traceparent`` injected and extracted by the SDK's propagator, as in production. Spans are encoded by the
OTLP exporter's own encoder (``encode_spans``) and written as OTLP/HTTP protobuf bodies (gateway) and OTLP
JSON lines (triton, which exports JSON). Metrics are Triton- and DCGM-style Prometheus text with timestamps.
Seeds are fixed, so the output is reproducible.
"""
from __future__ import annotations

import random
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

from . import ROOT
from .incidents import INCIDENTS
from .simulate import MS, Incident, Request, run

T0 = int(datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc).timestamp() * 1e9)
SPANS_PER_BODY = 2048


class SeededIds:
    """Reproducible trace/span ids (the SDK's IdGenerator interface)."""

    def __init__(self, seed: int):
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return True


def _providers(seed: int):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    ids = SeededIds(seed)
    out = {}
    for svc, extra in (("gateway", {"deployment.environment": "prod"}), ("triton", {})):
        exp = InMemorySpanExporter()
        # a fixed instance id: the SDK would otherwise draw a random one and the output would not reproduce
        tp = TracerProvider(resource=Resource.create({"service.name": svc, "service.instance.id": f"{svc}-0", **extra}),
                            id_generator=ids)
        tp.add_span_processor(SimpleSpanProcessor(exp))
        out[svc] = (tp, exp)
    return out


def emit(inc: Incident, reqs: list[Request], seed: int):
    """Create the spans of every simulated request with the OpenTelemetry SDK; returns {service: [ReadableSpan]}."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    prov = _providers(seed)
    hashes = _input_hashes(inc, len(reqs), seed)
    gw = prov["gateway"][0].get_tracer("gateway")
    tr = prov["triton"][0].get_tracer("triton-server")
    prop = TraceContextTextMapPropagator()
    for r in reqs:
        root = gw.start_span(f"POST {inc.route}", kind=SpanKind.SERVER, start_time=r.start_ns, attributes={
            "http.request.method": "POST", "http.route": inc.route, "app.input_tokens": r.tokens,
            **({"app.input_hash": hashes[r.idx]} if hashes else {})})
        ctx = trace.set_span_in_context(root)
        if r.feature_end_ns:
            feat = gw.start_span("GET feature-store /v1/features", context=ctx, kind=SpanKind.CLIENT,
                                 start_time=r.start_ns + int(0.1 * MS), attributes={
                                     "http.request.method": "GET", "server.address": "feature-store",
                                     "http.response.status_code": 200})
            feat.end(end_time=r.feature_end_ns)
        tok_start = (r.feature_end_ns or r.start_ns) + int(0.15 * MS)
        tok = gw.start_span(inc.preprocess_span_name, context=ctx, start_time=tok_start,
                            attributes={"app.input_tokens": r.tokens})
        tok.end(end_time=r.tokenize_end_ns)
        for att in r.attempts:
            attrs = {"http.request.method": "POST", "server.address": "triton", "server.port": 8000,
                     "url.full": "http://triton:8000/v2/models/clf/infer"}
            if att.resend:
                attrs["http.request.resend_count"] = att.resend
            cl = gw.start_span("POST triton /v2/models/clf/infer", context=ctx, kind=SpanKind.CLIENT,
                               start_time=att.sent_ns, attributes=attrs)
            carrier: dict[str, str] = {}
            prop.inject(carrier, context=trace.set_span_in_context(cl))
            _triton_spans(tr, prop.extract(carrier), att)
            if att.timed_out:
                cl.set_attribute("error.type", "timeout")
                cl.set_status(Status(StatusCode.ERROR, "client timeout"))
            else:
                cl.set_attribute("http.response.status_code", 200)
            cl.end(end_time=att.client_end_ns)
        if not r.failed:
            post = gw.start_span("postprocess", context=ctx, start_time=r.post_start_ns)
            post.end(end_time=r.end_ns - int(0.1 * MS))
            root.set_attribute("http.response.status_code", 200)
        else:
            root.set_attribute("http.response.status_code", 504)
            root.set_status(Status(StatusCode.ERROR, "upstream timeout"))
        root.end(end_time=r.end_ns)
    return {svc: list(exp.get_finished_spans()) for svc, (_, exp) in prov.items()}


def _input_hashes(inc: Incident, n: int, seed: int) -> list[str]:
    """An input fingerprint per request when the profile sets ``input_repeat``: that share of requests repeat
    an earlier request's input. A separate random stream, so the simulated timings stay the same."""
    if inc.input_repeat <= 0:
        return []
    rng = np.random.default_rng(seed + 7919)
    out: list[str] = []
    for i in range(n):
        out.append(out[int(rng.integers(len(out)))] if out and rng.random() < inc.input_repeat else f"{seed:x}-{i:08x}")
    return out


def _triton_spans(tr, parent_ctx, att) -> None:
    """Triton's OpenTelemetry spans: InferRequest → <model> (queue events) → compute (compute events)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    recv = att.arrive_ns
    infer = tr.start_span("InferRequest", context=parent_ctx, kind=SpanKind.SERVER, start_time=recv)
    infer.add_event("HTTP_RECV_START", timestamp=recv)
    infer.add_event("HTTP_RECV_END", timestamp=recv + 20_000)
    mctx = trace.set_span_in_context(infer)
    model = tr.start_span("clf", context=mctx, kind=SpanKind.SERVER, start_time=recv + 60_000, attributes={
        "triton.model_name": "clf", "triton.model_version": 1})
    model.add_event("REQUEST_START", timestamp=recv + 60_000)
    model.add_event("QUEUE_START", timestamp=recv + 70_000)
    start = max(att.start_ns, recv + 80_000)
    comp = tr.start_span("compute", context=trace.set_span_in_context(model), kind=SpanKind.SERVER,
                         start_time=start)
    dur = att.end_ns - start
    for name, ts in (("COMPUTE_START", start), ("COMPUTE_INPUT_END", start + dur // 20),
                     ("COMPUTE_OUTPUT_START", att.end_ns - dur // 50), ("COMPUTE_END", att.end_ns)):
        comp.add_event(name, timestamp=ts)
    comp.end(end_time=att.end_ns)
    model.add_event("REQUEST_END", timestamp=att.end_ns + 30_000)
    model.end(end_time=att.end_ns + 30_000)
    infer.add_event("HTTP_SEND_START", timestamp=att.end_ns + 60_000)
    infer.add_event("HTTP_SEND_END", timestamp=att.end_ns + 80_000)
    infer.end(end_time=att.end_ns + 90_000)


def _hex_ids(node):
    """MessageToDict renders bytes as base64; OTLP JSON wants hex trace/span ids."""
    import base64

    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                _hex_ids(v)
    elif isinstance(node, list):
        for v in node:
            _hex_ids(v)
    return node


def write_traces(folder: Path, spans_by_service: dict) -> None:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    otlp = folder / "otlp"
    otlp.mkdir(parents=True, exist_ok=True)
    gw = sorted(spans_by_service["gateway"], key=lambda s: s.end_time)
    for n, i in enumerate(range(0, len(gw), SPANS_PER_BODY)):
        (otlp / f"gateway-{n:05d}.pb").write_bytes(encode_spans(gw[i:i + SPANS_PER_BODY]).SerializeToString())
    tr = sorted(spans_by_service["triton"], key=lambda s: s.end_time)
    with open(otlp / "triton.jsonl", "wb") as fh:
        for i in range(0, len(tr), SPANS_PER_BODY):
            body = MessageToDict(encode_spans(tr[i:i + SPANS_PER_BODY]), use_integers_for_enums=True)
            fh.write(orjson.dumps(_hex_ids(body)) + b"\n")


def write_metrics(folder: Path, inc: Incident, reqs: list[Request], scrape_s: float = 2.0) -> None:
    """Triton and DCGM exposition as a scraper would have recorded it, with millisecond timestamps."""
    atts = [a for r in reqs for a in r.attempts]
    arrive = np.array([a.arrive_ns for a in atts])
    start = np.array([a.start_ns for a in atts])
    end = np.array([a.end_ns for a in atts])
    gpu_end = start + ((end - start) * inc.gpu_fraction).astype(np.int64)
    t_end = int(max(end.max(), T0 + inc.duration_s * 1e9)) + int(scrape_s * 1e9)
    step = int(scrape_s * 1e9)
    lines = []
    fams = [
        ("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes"),
        ("nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)"),
        ("nv_inference_exec_count", "counter", "Number of model executions performed (does not include cached requests)"),
        ("nv_inference_request_duration_us", "counter", "Cumulative inference request duration in microseconds"),
        ("nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds"),
        ("nv_inference_compute_infer_duration_us", "counter", "Cumulative compute inference duration in microseconds"),
        ("nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests awaiting execution"),
        ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
        ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
        ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "gauge", "Current clock event reasons (bitmask)."),
    ]
    model = 'model="clf",version="1"'
    gpu = 'gpu="0",UUID="GPU-5f1c0e2a-7d3b-4c9e-9a61-2b8e4f0d7c15",device="nvidia0",modelName="NVIDIA A10G",Hostname="triton-0"'
    for name, typ, help_ in fams:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {typ}")
        for ts in range(T0, t_end + 1, step):
            ms = ts // 1_000_000
            done = end <= ts
            if name == "nv_inference_pending_request_count":
                v = int(((arrive <= ts) & (start > ts)).sum())
            elif name == "nv_inference_exec_count" and inc.max_batch > 1:
                v = len(np.unique(start[done]))  # one execution per batch (a batch's requests share its start)
            elif name in ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count"):
                v = int(done.sum())
            elif name == "nv_inference_request_duration_us":
                v = int(((end - arrive)[done]).sum() // 1000)
            elif name == "nv_inference_queue_duration_us":
                v = int(((start - arrive)[done]).sum() // 1000)
            elif name == "nv_inference_compute_infer_duration_us":
                v = int(((end - start)[done]).sum() // 1000)
            elif name == "DCGM_FI_DEV_GPU_UTIL":
                busy = np.clip(np.minimum(gpu_end, ts) - np.maximum(start, ts - step), 0, None).sum()
                v = int(round(100 * busy / step / inc.instances))
            elif name == "DCGM_FI_DEV_FB_USED":
                v = int(24576 * inc.gpu_memory_frac)
            elif name == "DCGM_FI_DEV_FB_FREE":
                v = 24576 - int(24576 * inc.gpu_memory_frac)
            else:
                v = inc.clock_event_reasons
            labels = gpu if name.startswith("DCGM") else model
            lines.append(f"{name}{{{labels}}} {v} {ms}")
    (folder / "metrics.prom").write_text("\n".join(lines) + "\n")


def write_model_config(folder: Path, inc: Incident) -> None:
    """The model's config.pbtxt, as Triton reads it, when the profile batches (dynamic batcher on)."""
    if inc.max_batch <= 1:
        return
    (folder / "config.pbtxt").write_text(f"""name: "clf"
backend: "onnxruntime"
max_batch_size: {inc.max_batch}
dynamic_batching {{
  max_queue_delay_microseconds: {int(round(inc.batch_window_ms * 1000))}
}}
instance_group [ {{ count: {inc.instances} kind: KIND_GPU }} ]
""")


def write_readme(folder: Path, inc: Incident, reqs: list[Request]) -> None:
    n_att = sum(len(r.attempts) for r in reqs)
    failed = sum(r.failed for r in reqs)
    (folder / "README.md").write_text(f"""# Sample incident: {inc.name}

{inc.story}

**Cause:** {inc.cause}

**Expected top finding:** `{inc.expected_rule}`

Generated by `python -m sample_traces.generate {inc.name}` (seeded, reproducible): a simulated gateway
(`POST {inc.route}`: tokenize → model server → postprocess) in front of a Triton-like model server, emitted with
the real OpenTelemetry SDK (gateway spans as OTLP/HTTP protobuf bodies in `otlp/gateway-*.pb`, Triton-style spans
with queue/compute events as OTLP JSON lines in `otlp/triton.jsonl`, joined by W3C traceparent), and
Triton/DCGM metrics as Prometheus text with timestamps in `metrics.prom`.

{len(reqs):,} requests over {inc.duration_s:.0f} s, {n_att:,} model-server calls, {failed} failed requests.
""")


def generate(name: str, out_root: Path = ROOT, incident: Incident | None = None, seed: int | None = None) -> Path:
    """Write incident ``name`` (a bundled one, or ``incident`` when given) under ``out_root``."""
    if incident is None:
        incident, bundled_seed = INCIDENTS[name]
        seed = bundled_seed if seed is None else seed
    inc, seed = incident, (seed if seed is not None else 1)
    reqs = run(inc, seed, T0)
    folder = out_root / name
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_traces(folder, emit(inc, reqs, seed))
    write_metrics(folder, inc, reqs)
    write_model_config(folder, inc)
    write_readme(folder, inc, reqs)
    return folder


def main(argv: list[str]) -> int:
    names = argv or sorted(INCIDENTS)
    for n in names:
        if n not in INCIDENTS:
            print(f"unknown incident {n!r}; have {', '.join(sorted(INCIDENTS))}", file=sys.stderr)
            return 2
        print(generate(n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
