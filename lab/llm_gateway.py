"""The LLM demo's gateway: an HTTP service in front of vLLM, instrumented with the OpenTelemetry SDK as a real
one would be (the shape of the ``vllm-gateway-mixed`` capture). ``POST /v1/generate`` with ``{"prompt": ...,
"max_tokens": N}``: a SERVER span, ``build_prompt`` (a small pure-Python pass per word), a CLIENT span
``text_completion tiny-llama`` calling vLLM's ``/v1/completions`` with ``stream=true`` and a W3C
``traceparent`` (vLLM's ``llm_request`` span joins the trace), then ``postprocess``. vLLM's server-sent events
are passed through to the client as they arrive, so the client measures time to first token and inter-token
latency through the gateway."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .served import Served


class LLMGateway(Served):
    def __init__(self, vllm_url: str, otlp_endpoint: str, model: str = "tiny-llama", timeout_s: float = 120.0):
        import requests
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": "llm-gateway",
                                                                 "service.instance.id": "llm-gateway-0"}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint),
                                                            schedule_delay_millis=500, max_queue_size=16384))
        self.tracer = self.provider.get_tracer("llm-gateway")
        self.vllm, self.model, self.timeout_s = vllm_url, model, timeout_s
        self._local = threading.local()
        self._requests = requests
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the streamed body ends when the connection closes
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    req = json.loads(body or b"{}")
                    prompt, max_tokens = str(req["prompt"]), int(req.get("max_tokens", 16))
                except (ValueError, TypeError, KeyError) as exc:
                    data = json.dumps({"error": str(exc)}).encode()
                    self.send_response(400)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                outer.generate(self, prompt, max_tokens)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _session(self):
        s = getattr(self._local, "s", None) or self._requests.Session()
        self._local.s = s
        return s

    def generate(self, handler, prompt: str, max_tokens: int) -> None:
        import time

        from opentelemetry import trace
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        with self.tracer.start_as_current_span("POST /v1/generate", kind=SpanKind.SERVER, attributes={
                "http.request.method": "POST", "http.route": "/v1/generate", "app.max_tokens": max_tokens}) as root:
            with self.tracer.start_as_current_span("build_prompt"):
                words = prompt.split()
                h = 2166136261
                for w in words:  # the per-word pass a real prompt builder does (normalise, count, template)
                    for ch in w:
                        h = (h * 16777619 ^ ord(ch)) & 0xFFFFFFFF
                text = " ".join(words)
            root.set_attribute("app.prompt_words", len(words))
            status, usage, finish, sent = 200, {}, None, False
            with self.tracer.start_as_current_span(f"text_completion {self.model}", kind=SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "text_completion", "gen_ai.system": "vllm",
                    "gen_ai.request.model": self.model, "gen_ai.request.max_tokens": max_tokens,
                    "server.address": "127.0.0.1"}) as cl:
                headers: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(headers, context=trace.set_span_in_context(cl))
                body = {"model": self.model, "prompt": text, "max_tokens": max_tokens, "stream": True,
                        "ignore_eos": True, "temperature": 0.0, "stream_options": {"include_usage": True}}
                t0 = time.monotonic()
                try:
                    with self._session().post(f"{self.vllm}/v1/completions", json=body, headers=headers,
                                              stream=True, timeout=self.timeout_s) as r:
                        if r.status_code != 200:
                            status = 502
                        else:
                            handler.send_response(200)
                            handler.send_header("Content-Type", "text/event-stream")
                            handler.end_headers()
                            sent, first = True, True
                            for line in r.iter_lines():
                                if not line:
                                    continue
                                if first and line.startswith(b"data: {"):
                                    cl.set_attribute("gen_ai.response.time_to_first_chunk", time.monotonic() - t0)
                                    first = False
                                if line.startswith(b"data: {"):
                                    msg = json.loads(line[6:])
                                    usage = msg.get("usage") or usage
                                    for c in msg.get("choices") or []:
                                        finish = c.get("finish_reason") or finish
                                handler.wfile.write(line + b"\n\n")
                                handler.wfile.flush()
                except (self._requests.RequestException, OSError):
                    status = 504
                cl.set_attribute("http.response.status_code", 200 if status == 200 else 502)
                if usage:
                    cl.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
                    cl.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
                if finish:
                    cl.set_attribute("gen_ai.response.finish_reasons", [finish])
            with self.tracer.start_as_current_span("postprocess"):
                pass
            root.set_attribute("http.response.status_code", status)
            if status != 200:
                root.set_status(trace.Status(trace.StatusCode.ERROR, "upstream error"))
            if not sent:
                try:
                    handler.send_response(status)
                    handler.end_headers()
                except OSError:
                    pass

