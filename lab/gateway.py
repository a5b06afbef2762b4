"""The demo's gateway: an HTTP service instrumented with the OpenTelemetry SDK, as a real one would be.
``POST /v1/classify`` with ``{"tokens": N}``: a SERVER span, ``tokenize`` (pure-Python work that grows with
N, at a cost per token the incident sets), a CLIENT call to Triton carrying W3C ``traceparent`` so Triton's
spans join the trace, then ``postprocess``. Spans go to an OTLP/HTTP endpoint with the real SDK exporter."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .served import Served


class Gateway(Served):
    def __init__(self, triton_url: str, otlp_endpoint: str, tokenize_us_per_token: float = 2.0,
                 model: str = "clf", vocab: int = 2000, timeout_s: float = 10.0, retries: int = 0):
        import requests
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": "gateway",
                                                                 "service.instance.id": "gateway-0"}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint),
                                                            schedule_delay_millis=500))
        self.tracer = self.provider.get_tracer("gateway")
        self.triton = f"{triton_url}/v2/models/{model}/infer"
        self.cost = tokenize_us_per_token
        self.vocab = vocab
        self.timeout_s = timeout_s  # per call to Triton; a timed-out call is retried up to `retries` times,
        self.retries = retries      # at once and without a budget (the retry-spiral shape); Triton still runs it
        self._local = threading.local()
        self._requests = requests
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    n = int(json.loads(body or b"{}").get("tokens", 16))
                    status, out = outer.classify(n)
                except (ValueError, TypeError) as exc:
                    status, out = 400, {"error": str(exc)}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _tokenize(self, n: int) -> list[int]:
        """Pure-Python work proportional to the input: the kind of preprocessing that eats a p95."""
        end = time.perf_counter() + n * self.cost / 1e6
        ids, h = [], 2166136261
        while time.perf_counter() < end or len(ids) < n:
            h = (h * 16777619) & 0xFFFFFFFF
            if len(ids) < n:
                ids.append(h % self.vocab)
        return ids

    def classify(self, n: int) -> tuple[int, dict]:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        s = getattr(self._local, "s", None) or self._requests.Session()
        self._local.s = s
        with self.tracer.start_as_current_span("POST /v1/classify", kind=SpanKind.SERVER, attributes={
                "http.request.method": "POST", "http.route": "/v1/classify", "app.input_tokens": n,
                # the input's fingerprint (its only field here is the length), so triage can measure repeats
                "app.input_hash": hashlib.blake2b(f"tokens={n}".encode(), digest_size=8).hexdigest()}) as root:
            with self.tracer.start_as_current_span("tokenize", attributes={"app.input_tokens": n}):
                ids = self._tokenize(n)
            r = None
            for attempt in range(self.retries + 1):
                attrs = {"server.address": "127.0.0.1", "http.request.method": "POST"}
                if attempt:
                    attrs["http.request.resend_count"] = attempt
                with self.tracer.start_as_current_span("POST triton /v2/models/clf/infer", kind=SpanKind.CLIENT,
                                                       attributes=attrs) as cl:
                    headers: dict[str, str] = {}
                    TraceContextTextMapPropagator().inject(headers, context=trace.set_span_in_context(cl))
                    try:
                        r = s.post(self.triton, json={"inputs": [{"name": "IDS", "shape": [1, n], "datatype": "INT64",
                                                                  "data": ids}]}, headers=headers, timeout=self.timeout_s)
                    except self._requests.Timeout:
                        cl.set_attribute("error.type", "timeout")
                        cl.set_status(trace.Status(trace.StatusCode.ERROR, "client timeout"))
                        s = self._local.s = self._requests.Session()  # the timed-out connection is unusable
                        continue
                    cl.set_attribute("http.response.status_code", r.status_code)
                    break
            if r is None:
                root.set_attribute("http.response.status_code", 504)
                root.set_status(trace.Status(trace.StatusCode.ERROR, "upstream timeout"))
                return 504, {"error": "upstream timeout"}
            if r.status_code != 200:
                root.set_attribute("http.response.status_code", 502)
                return 502, {"error": r.text[:200]}
            with self.tracer.start_as_current_span("postprocess"):
                logits = np.asarray(r.json()["outputs"][0]["data"], dtype=float)
                label = int(logits.argmax())
            root.set_attribute("http.response.status_code", 200)
            return 200, {"label": label}

