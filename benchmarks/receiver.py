"""Receiver benchmark: sustained spans/s into triage's OTLP/HTTP receiver on loopback, and how many
acknowledged spans are missing from the store afterwards (must be zero).

    python benchmarks/receiver.py [--seconds 10] [--senders 4] [--batch 512] [--bodies 512] [--settle 1] [--json]

The receiver runs in its own process (as `triage live` does). Three runs, measured in one invocation:
  raw   pre-encoded ExportTraceServiceRequest bodies posted by --senders keep-alive clients (ids are unique
        within the --bodies bodies, which are cycled through; the receiver stores each span once, so "lost"
        compares the distinct spans acknowledged with the store)
  live  the same sender into the receiver as a live session runs it: spans staged with their arrival time,
        and every second the traces idle for --settle are promoted into the analysed tables
  sdk   the real opentelemetry-sdk OTLPSpanExporter behind a BatchSpanProcessor (creating spans costs too)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serve(settle_s: float | None) -> int:
    """Child: a receiver on an ephemeral port (staging, with a promoter thread, when ``settle_s`` is given);
    prints the port, then the store count when stdin closes."""
    from triage.collectors.receiver import Receiver
    from triage.collectors.store import Store
    from triage.sessions.staging import Staging

    store = Store()
    done = threading.Event()
    promoted = [0]
    with Receiver(store, port=0, queue_size=64, staging=settle_s is not None) as r:
        staging = Staging(r) if settle_s is not None else None

        def promoter():
            while not done.wait(1.0):
                promoted[0] += staging.promote(settle_s, max_hold_s=60)

        t = threading.Thread(target=promoter)
        if settle_s is not None:
            t.start()
        print(json.dumps({"port": r.port}), flush=True)
        sys.stdin.read()
        done.set()
    if settle_s is not None:
        t.join()
        staging.promote()
    print(json.dumps({"stored": store.scalar("SELECT count(*) FROM spans"), "accepted": r.stats.accepted_spans,
                      "refused_busy": r.stats.refused_busy, "promoted_while_running": promoted[0]}), flush=True)
    return 0


def bodies(n_bodies: int, batch: int) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    t0 = time.time_ns()
    for b in range(n_bodies):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "bench"
        ss = rs.scope_spans.add()
        for i in range(batch):
            sp = ss.spans.add()
            sp.trace_id = os.urandom(16)
            sp.span_id = os.urandom(8)
            sp.name = "POST /v1/classify"
            sp.kind = 2
            sp.start_time_unix_nano = t0 + (b * batch + i) * 1000
            sp.end_time_unix_nano = sp.start_time_unix_nano + 5_000_000
            a = sp.attributes.add()
            a.key, a.value.string_value = "http.route", "/v1/classify"
        out.append(req.SerializeToString())
    return out


def run_raw(endpoint: str, seconds: float, senders: int, batch: int, n_bodies: int) -> dict:
    import requests

    pool = bodies(n_bodies, batch)
    acked = [0] * senders
    bodies_acked: set = set()  # ids repeat once the bodies are cycled: the receiver keeps each span once
    busy = [0] * senders
    stop = time.monotonic() + seconds

    def sender(k: int):
        s = requests.Session()
        i = k
        while time.monotonic() < stop:
            body = pool[i % len(pool)]
            r = s.post(endpoint, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30)
            if r.status_code == 200:
                acked[k] += batch
                bodies_acked.add(i % len(pool))
            elif r.status_code in (429, 503):
                busy[k] += 1
                time.sleep(float(r.headers.get("Retry-After", "1")) / 10)
            i += senders

    t = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    return {"acked": sum(acked), "distinct_acked": len(bodies_acked) * batch, "seconds": elapsed,
            "busy_answers": sum(busy)}


def run_sdk(endpoint: str, n_spans: int) -> dict:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from opentelemetry.sdk.trace.export import SpanExportResult

    class Counting(OTLPSpanExporter):
        """Counts the spans the receiver acknowledged (export returned SUCCESS)."""
        acked = 0

        def export(self, spans):
            result = super().export(spans)
            if result == SpanExportResult.SUCCESS:
                Counting.acked += len(spans)
            return result

    tp = TracerProvider(resource=Resource.create({"service.name": "bench-sdk"}))
    tp.add_span_processor(BatchSpanProcessor(Counting(endpoint=endpoint), max_queue_size=n_spans,
                                             max_export_batch_size=512, schedule_delay_millis=50))
    tracer = tp.get_tracer("bench")
    t = time.perf_counter()
    for _ in range(n_spans):
        tracer.start_span("tokenize", attributes={"app.input_tokens": 64}).end()
    tp.force_flush(60_000)
    elapsed = time.perf_counter() - t
    tp.shutdown()
    return {"acked": Counting.acked, "created": n_spans, "seconds": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--sdk-spans", type=int, default=100_000)
    ap.add_argument("--bodies", type=int, default=512,
                    help="distinct pre-encoded bodies the raw senders cycle through (ids repeat after them)")
    ap.add_argument("--settle", type=float, default=1.0, help="settle seconds of the live run (default 1)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--staging", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.staging)
    results = {}
    for mode in ("raw", "live", "sdk"):
        extra = ["--staging", str(args.settle)] if mode == "live" else []
        child = subprocess.Popen([sys.executable, __file__, "--serve", *extra], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
        port = json.loads(child.stdout.readline())["port"]
        endpoint = f"http://127.0.0.1:{port}/v1/traces"
        if mode == "sdk":
            res = run_sdk(endpoint, args.sdk_spans)
        else:
            res = run_raw(endpoint, args.seconds, args.senders, args.batch, args.bodies)
        out, _ = child.communicate("", timeout=120)
        final = json.loads(out.strip().splitlines()[-1])
        acked = res["acked"]
        results[mode] = {"spans_per_s": round(acked / res["seconds"]), "acked": acked, "stored": final["stored"],
                         "lost_acknowledged": max(0, res.get("distinct_acked", acked) - final["stored"]),
                         "seconds": round(res["seconds"], 2),
                         "busy_answers": res.get("busy_answers", 0),
                         "promoted_while_running": final["promoted_while_running"]}
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'sender':<8}{'spans/s':>12}{'vs raw':>8}{'acked':>12}{'stored':>12}{'lost':>8}{'busy 503s':>11}"
          f"{'promoted live':>15}")
    for mode, r in results.items():
        print(f"{mode:<8}{r['spans_per_s']:>12,}{r['spans_per_s'] / results['raw']['spans_per_s']:>7.2f}x"
              f"{r['acked']:>12,}{r['stored']:>12,}{r['lost_acknowledged']:>8}{r['busy_answers']:>11}"
              f"{r['promoted_while_running']:>15,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
