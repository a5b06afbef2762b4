"""The OTLP/HTTP receiver, fed by the real opentelemetry-sdk OTLP exporter, and its answers to faults."""
import gzip
import json

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from triage.collectors.receiver import Receiver
from triage.collectors.store import Store
from triage.sessions.staging import Staging
from conftest import wait_until


@pytest.fixture
def receiver():
    store = Store()
    with Receiver(store, port=0) as r:
        yield r


def _emit(endpoint, n_traces, compression=None):
    tp = TracerProvider(resource=Resource.create({"service.name": "sdk-client"}))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, compression=compression),
                                             max_export_batch_size=256))
    tracer = tp.get_tracer("t")
    for i in range(n_traces):
        with tracer.start_as_current_span("POST /v1/classify", attributes={"http.route": "/v1/classify"}):
            with tracer.start_as_current_span("tokenize", attributes={"app.input_tokens": i}):
                pass
            with tracer.start_as_current_span("infer") as s:
                s.add_event("QUEUE_START")
    tp.force_flush()
    tp.shutdown()
    return 3 * n_traces


@pytest.mark.parametrize("compression", [None, Compression.Gzip])
def test_every_span_from_the_sdk_exporter_is_in_the_store(receiver, compression):
    sent = _emit(receiver.endpoint, 400, compression)
    assert receiver.store.scalar("SELECT count(*) FROM spans") == sent == receiver.stats.accepted_spans
    assert receiver.store.scalar("SELECT count(*) FROM span_events") == 400
    assert receiver.store.scalar("SELECT count(DISTINCT route) FROM spans WHERE route IS NOT NULL") == 1
    assert receiver.stats.bad_requests == 0


def _post(receiver, body, ctype="application/x-protobuf", **headers):
    return requests.post(receiver.endpoint, data=body, headers={"Content-Type": ctype, **headers}, timeout=10)


def test_json_body_and_partial_success(receiver):
    good = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "a",
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    bad = dict(good, spanId="nothex")
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [good, bad]}]}]}
    r = _post(receiver, json.dumps(body), "application/json")
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert receiver.store.scalar("SELECT count(*) FROM spans") == 1


def test_fault_answers(receiver):
    assert _post(receiver, b"\x0a\xff\xff garbage").status_code == 400
    assert _post(receiver, b"{not json", "application/json").status_code == 400
    assert _post(receiver, b"x", "text/plain").status_code == 415
    assert _post(receiver, b"x" * (receiver.max_body + 1)).status_code == 413
    bomb = gzip.compress(b"\0" * (80 << 20))  # 80 MiB of zeros in ~80 KiB
    r = _post(receiver, bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert _post(receiver, b"abc", **{"Content-Encoding": "br"}).status_code == 415
    assert requests.post(receiver.endpoint.replace("/v1/traces", "/v1/logs"), data=b"",
                         headers={"Content-Type": "application/x-protobuf"}, timeout=5).status_code == 404
    assert receiver.store.scalar("SELECT count(*) FROM spans") == 0


def test_full_queue_answers_503_with_retry_after():
    import threading

    store = Store()
    r = Receiver(store, port=0, queue_size=1)
    gate = threading.Event()
    original = r._writer.write

    def slow_write(cols):  # the writer holds each request until the gate opens, so the queue fills up
        gate.wait(10)
        return original(cols)

    r._writer.write = slow_write
    with r:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        def body(k):  # distinct spans (the same span sent twice is stored once)
            req = ExportTraceServiceRequest()
            sp = req.resource_spans.add().scope_spans.add().spans.add()
            sp.trace_id, sp.span_id, sp.name = bytes(range(1, 17)), bytes(range(k + 1, k + 9)), "x"
            sp.start_time_unix_nano, sp.end_time_unix_nano = 1, 2
            return req.SerializeToString()

        results = []
        threads = [threading.Thread(target=lambda k=k: results.append(_post(r, body(k)))) for k in range(4)]
        for t in threads:
            t.start()
        # at most two are held (one in the gated writer, one queued): the others are answered 503 at once, and
        # once two answers are back every request has reached the receiver
        wait_until(lambda: len(results) >= 2, 10, "the requests beyond the queue to be refused")
        gate.set()
        for t in threads:
            t.join()
        codes = sorted(x.status_code for x in results)
        assert 503 in codes and 200 in codes
        assert all(x.headers.get("Retry-After") == "1" for x in results if x.status_code == 503)
        # every 200 is a span in the store
        assert store.scalar("SELECT count(*) FROM spans") == codes.count(200)


def test_staged_traces_move_when_idle_or_held_too_long():
    """Live sessions stage spans until their trace has settled; a trace that keeps growing (a long session
    exporting turn by turn) is still moved once it has been held for max_hold_s."""
    store = Store()
    now = [10**12]  # the arrival clock, injected: it moves only when the test says so
    with Receiver(store, port=0, staging=True) as r:
        r.clock = lambda: now[0]
        staging = Staging(r)  # the live session's policy: it decides when a staged trace moves
        tp = TracerProvider(resource=Resource.create({"service.name": "chat"}))
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=r.endpoint), schedule_delay_millis=60_000))
        tracer = tp.get_tracer("t")
        with tracer.start_as_current_span("session"):
            for i in range(3):
                with tracer.start_as_current_span(f"turn {i}"):
                    pass
                tp.force_flush()  # each turn arrives on its own, the session's root at the end
                assert staging.promote(idle_s=10) == 0
                now[0] += 300_000_000  # 0.3 s between turns
            assert staging.pending() == {"spans": 3, "traces": 1}
            assert staging.promote(idle_s=10, max_hold_s=60) == 0
            assert staging.promote(idle_s=10, max_hold_s=0.5) == 3
        tp.force_flush()
        tp.shutdown()
        assert staging.pending() == {"spans": 1, "traces": 1}
        assert staging.promote(idle_s=10) == 0
        assert staging.promote() == 1  # everything, as a session's stop() does
    assert store.scalar("SELECT count(*) FROM spans") == 4
    assert store.scalar("SELECT count(DISTINCT trace_id) FROM spans") == 1
    assert store.scalar("SELECT count(*) FROM pending_spans") == 0


def test_a_failed_write_stores_nothing_and_asks_for_a_retry(monkeypatch):
    """Spans and their events are written together or not at all: a client retrying after the 503 does not
    leave duplicate spans behind."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from triage.collectors.receiver import writer as writer_mod

    real = writer_mod.insert_frame

    def failing_on_events(con, table, columns, data):
        if table in ("span_events", "pending_events"):  # events are staged, then moved with their spans
            raise OSError("disk full")
        return real(con, table, columns, data)

    monkeypatch.setattr(writer_mod, "insert_frame", failing_on_events)
    tracer = TracerProvider(resource=Resource.create({"service.name": "sdk-client"})).get_tracer("t")
    with tracer.start_as_current_span("infer") as span:
        span.add_event("QUEUE_START")
    body = encode_spans([span]).SerializeToString()  # what the SDK's exporter sends
    store = Store()
    with Receiver(store, port=0) as r:
        resp = requests.post(r.endpoint, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert "disk full" in str(resp.content)
    assert store.scalar("SELECT count(*) FROM spans") == 0
