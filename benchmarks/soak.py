"""Fault campaign against triage's OTLP/HTTP receiver on loopback: a small well-behaved client keeps sending
while other clients send every kind of fault found in issue 11, at once, for the whole run.

    python benchmarks/soak.py --minutes N [--json]

The receiver runs in its own process (as `triage live` does) with its default limits. At the end it prints,
per kind of fault, the requests tried and how they were answered; then the spans acknowledged (answered 200
and not rejected), the spans stored, the acknowledged spans missing from the store (must be 0), the
receiver's peak RSS against the stated bound, and the well-behaved client's latency (p50/p99/max).
tests/test_h_receiver_campaign.py runs the same campaign for a few seconds.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSS_BOUND = 1536 << 20   # the receiver process's peak RSS must stay under this (stated in RESULTS.md)
IDLE_CONNECTIONS = 300
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


def serve(idle_timeout_s: float | None, read_timeout_s: float | None) -> int:
    """Child: a receiver with default limits on an ephemeral port; prints the port, then (when stdin closes)
    the stored span ids, its stats and peak RSS."""
    from triage.collectors.receiver import Receiver
    from triage.collectors.store import Store

    store = Store()
    kw = {k: v for k, v in (("idle_timeout_s", idle_timeout_s), ("read_timeout_s", read_timeout_s)) if v}
    with Receiver(store, port=0, **kw) as r:
        print(json.dumps({"port": r.port, "max_connections": r.max_connections}), flush=True)
        sys.stdin.read()
    ids = [row[0] for row in store.query("SELECT DISTINCT span_id FROM spans")]
    hwm = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    print(json.dumps({"stored_ids": ids, "rows": store.scalar("SELECT count(*) FROM spans"), "peak_rss": hwm,
                      "stats": vars(r.stats), "budget_peak": r.budget.peak, "budget": r.budget.limit}), flush=True)
    return 0


# -- bodies -----------------------------------------------------------------------------------------

def pb_request(ids, end_offset_ns: int = 0, **fields) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "soak"
    ss = rs.scope_spans.add()
    now = time.time_ns() + end_offset_ns
    for i in ids:
        sp = ss.spans.add()
        sp.trace_id, sp.span_id = (i // 4 + 1).to_bytes(16, "big"), (i + 1).to_bytes(8, "big")
        sp.name = "POST /v1/classify"
        sp.kind = 2
        sp.start_time_unix_nano, sp.end_time_unix_nano = now - 5_000_000, now
        a = sp.attributes.add()
        a.key, a.value.string_value = "http.route", "/v1/classify"
        for k, v in fields.items():
            setattr(sp, k, v)
    return req.SerializeToString()


def json_span(i: int, **fields) -> dict:
    now = time.time_ns()
    return {"traceId": f"{i // 4 + 1:032x}", "spanId": f"{i + 1:016x}", "name": "op",
            "startTimeUnixNano": str(now - 5_000_000), "endTimeUnixNano": str(now), **fields}


def json_doc(*resource_spans) -> bytes:
    return json.dumps({"resourceSpans": list(resource_spans)}).encode()


def span_hex(i: int) -> str:
    return f"{i + 1:016x}"


POISONS = [
    ("pb", {"end_time_unix_nano": 2**63 + 5}), ("pb", {"kind": 2**31 - 1}), ("json", {"kind": 300}),
    ("json", {"status": {"code": 1000}}),
    ("json", {"attributes": [{"key": "http.response.status_code", "value": {"intValue": str(2**40)}}]}),
    ("json", {"attributes": [{"key": "http.request.resend_count", "value": {"intValue": str(2**33)}}]}),
    ("json", {"attributes": [{"key": "big", "value": {"intValue": str(2**64 + 1)}}]}),
]


def good_client(endpoint: str, seconds: float) -> int:
    """Child: 10 new spans every 50 ms; prints the answers, the acknowledged span ids and the latencies."""
    import requests

    s = requests.Session()
    base = 999 * 10**9
    answers, acked, latency = Counter(), [], []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        ids = range(base + i, base + i + 10)
        i += 10
        body = pb_request(ids)
        t = time.perf_counter()
        try:
            r = s.post(endpoint, data=body, headers=PB, timeout=30)
            answers[str(r.status_code)] += 1
            if r.status_code == 200:
                latency.append(time.perf_counter() - t)
                acked += [span_hex(k) for k in ids]
        except requests.RequestException as exc:
            answers[type(exc).__name__] += 1
        time.sleep(0.05)
    print(json.dumps({"answers": answers, "acked": acked, "latency": latency}))
    return 0


# -- the campaign -----------------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.tried = Counter()
        self.answers: dict = defaultdict(Counter)
        self.acked: set = set()
        self.latency: list = []

    def note(self, kind: str, answer, acked=()):
        with self.lock:
            self.tried[kind] += 1
            self.answers[kind][str(answer)] += 1
            self.acked.update(span_hex(i) for i in acked)


def campaign(seconds: float, big_senders: int = 2, big_mb: float = 10.0, idle: int = IDLE_CONNECTIONS,
             only: set | None = None, timeouts_s: float | None = None) -> dict:
    """Run the faults (all, or the workers named in ``only``) next to the well-behaved client."""
    import requests

    extra = ["--idle-timeout", str(timeouts_s), "--read-timeout", str(timeouts_s)] if timeouts_s else []
    child = subprocess.Popen([sys.executable, __file__, "--serve", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    hello = json.loads(child.stdout.readline())
    port = hello["port"]
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    tally = Tally()
    stop = threading.Event()
    counters = iter(range(1, 1000))
    lock = threading.Lock()

    def id_range():
        with lock:
            return next(counters) * 10**9

    def post(kind, session, body, headers, good_ids=(), timeout=60):
        try:
            r = session.post(endpoint, data=body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            tally.note(kind, type(exc).__name__)
            return None
        ok = r.status_code == 200
        tally.note(kind, r.status_code, good_ids if ok else ())
        if r.status_code == 503:
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0) / 4)
        return r

    def raw(kind, data: bytes, hold_s: float = 0.0):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
                s.sendall(data)
                if hold_s:
                    time.sleep(hold_s)
                head = s.recv(64)
            tally.note(kind, head[9:12].decode() if head.startswith(b"HTTP/") else "closed")
        except OSError as exc:
            tally.note(kind, type(exc).__name__)

    def good():  # the well-behaved small client, in its own process (this one's GIL is busy making faults)
        g = subprocess.run([sys.executable, __file__, "--good", endpoint, "--seconds", str(seconds)],
                           capture_output=True, text=True, cwd=ROOT, timeout=seconds + 120)
        res = json.loads(g.stdout.strip().splitlines()[-1])
        with tally.lock:
            kind = "good (10 spans / 50 ms)"
            tally.tried[kind] += sum(res["answers"].values())
            tally.answers[kind].update(res["answers"])
            tally.acked.update(res["acked"])
            tally.latency.extend(res["latency"])

    def chunked():
        s = requests.Session()
        base = id_range()
        i = 0
        while not stop.is_set():
            ids = range(base + i, base + i + 25)
            i += 25
            body = pb_request(ids)
            post("chunked body", s, (body[k:k + 256] for k in range(0, len(body), 256)), PB, ids)
            time.sleep(0.1)

    def multigzip():
        s = requests.Session()
        base = id_range()
        i = 0
        while not stop.is_set():
            a, b = range(base + i, base + i + 7), range(base + i + 7, base + i + 16)
            i += 16
            post("multi-member gzip", s, gzip.compress(pb_request(a)) + gzip.compress(pb_request(b)),
                 {**PB, "Content-Encoding": "gzip"}, list(a) + list(b))
            time.sleep(0.1)

    def wrong_shape():
        s = requests.Session()
        base = id_range()
        i = 0
        shapes = [lambda j: {"scopeSpans": {"spans": [json_span(j)]}},
                  lambda j: {"scopeSpans": [{"spans": {"0": json_span(j)}}]},
                  lambda j: {"scopeSpans": [{"spans": ["a span"]}]}]
        while not stop.is_set():
            good_id = base + i
            doc = json_doc({"scopeSpans": [{"spans": [json_span(good_id)]}]}, shapes[i % 3](base + i + 1))
            i += 2
            post("wrong-shaped JSON", s, doc, JS, [good_id])
            time.sleep(0.1)

    def poison():
        s = requests.Session()
        base = id_range()
        i = 0
        while not stop.is_set():
            kind, fields = POISONS[(i // 2) % len(POISONS)]
            good_id, bad_id = base + i, base + i + 1
            i += 2
            if kind == "pb":
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

                req = ExportTraceServiceRequest()
                req.ParseFromString(pb_request([good_id]))
                bad = ExportTraceServiceRequest()
                bad.ParseFromString(pb_request([bad_id], **fields))
                req.resource_spans.extend(bad.resource_spans)
                post("poison values", s, req.SerializeToString(), PB, [good_id])
            else:
                post("poison values", s, json_doc({"scopeSpans": [{"spans": [json_span(good_id),
                                                                             json_span(bad_id, **fields)]}]}),
                     JS, [good_id])
            time.sleep(0.1)

    def duplicates():
        s = requests.Session()
        base = id_range()
        body = pb_request(range(base, base + 5))
        while not stop.is_set():
            post("duplicates (same 5 spans)", s, body, PB, range(base, base + 5))
            time.sleep(0.02)

    def old_clock():
        s = requests.Session()
        base = id_range()
        i = 0
        while not stop.is_set():
            ids = range(base + i, base + i + 5)
            i += 5
            post("clock 20 min behind", s, pb_request(ids, end_offset_ns=-20 * 60 * 10**9), PB, ids)
            time.sleep(0.2)

    def bad_length():
        n = 0
        while not stop.is_set():
            value = [b"abc", b"-1", b"99999999999999999999"][n % 3]
            n += 1
            raw("bad Content-Length", b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                b"\r\nContent-Length: " + value + b"\r\n\r\n" + b"\0" * 32)
            time.sleep(0.2)

    def oversize():
        s = requests.Session()
        while not stop.is_set():
            post("chunked 32 MiB (limit 16)", s, (b"\x0a" * (1 << 20) for _ in range(32)), PB)
            time.sleep(1.0)

    def bomb():
        s = requests.Session()
        data = gzip.compress(b"\0" * (80 << 20))
        while not stop.is_set():
            post("gzip bomb (80 MiB)", s, data, {**PB, "Content-Encoding": "gzip"})
            time.sleep(1.0)

    def budget(k):
        s = requests.Session()
        n = 48 << 20
        varint = bytes([0x80 | (n & 0x7F), 0x80 | (n >> 7 & 0x7F), 0x80 | (n >> 14 & 0x7F), n >> 21])
        data = gzip.compress(b"\x7a" + varint + b"\0" * n)
        while not stop.is_set():
            post("gzip to 48 MiB (x4 at once)", s, data, {**PB, "Content-Encoding": "gzip"})

    per = max(1, int(big_mb * 1e6 / len(pb_request(range(1000))) * 1000))
    big_bodies = []
    for k in range(big_senders):  # made before the clock starts: making them costs this process seconds
        base = id_range()
        big_bodies.append([(pb_request(range(base + j * per, base + (j + 1) * per)),
                            range(base + j * per, base + (j + 1) * per)) for j in range(2)])

    def big(k):
        s = requests.Session()
        n = 0
        while not stop.is_set():  # two bodies in turn: after the first round, duplicates
            body, ids = big_bodies[k][n % 2]
            n += 1
            post(f"{big_mb:g} MB bodies (x{big_senders})", s, body, PB, ids, timeout=120)

    def idle_flood():
        conns = []
        while not stop.is_set():
            conns = [c for c in conns if c.fileno() >= 0]
            while len(conns) < idle and not stop.is_set():
                try:
                    conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                    tally.note(f"idle connections ({idle} held)", "opened")
                except OSError as exc:
                    tally.note(f"idle connections ({idle} held)", type(exc).__name__)
                    break
            for c in list(conns):  # reopen those the server closed
                c.setblocking(False)
                try:
                    if c.recv(1) == b"":
                        c.close()
                        conns.remove(c)
                except BlockingIOError:
                    pass
                except OSError:
                    c.close()
                    conns.remove(c)
            stop.wait(0.5)
        for c in conns:
            c.close()

    def slowloris():  # headers that never finish: the server must close the connection (idle timeout)
        while not stop.is_set():
            t = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
                    c.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
                    got = c.recv(64)
                tally.note("unfinished headers", f"closed after {time.monotonic() - t:.0f}s" if not got
                           else got[9:12].decode())
            except OSError as exc:
                tally.note("unfinished headers", type(exc).__name__)

    def slow_body():
        while not stop.is_set():
            raw("stalled body", b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10)
            stop.wait(0.5)

    workers = [good] + [w for w in (chunked, multigzip, wrong_shape, poison, duplicates, old_clock, bad_length,
                                    oversize, bomb, idle_flood, slowloris, slow_body)
                        if only is None or w.__name__ in only]
    if only is None or "budget" in only:
        workers += [lambda k=k: budget(k) for k in range(4)]
    if only is None or "big" in only:
        workers += [lambda k=k: big(k) for k in range(big_senders)]
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    t0 = time.monotonic()
    end = t0 + seconds
    for t in threads:
        t.start()
    while time.monotonic() < end:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    elapsed = time.monotonic() - t0
    out, err = child.communicate("", timeout=300)
    final = json.loads(out.strip().splitlines()[-1])
    stored = set(final["stored_ids"])
    lat = sorted(tally.latency)

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None

    return {
        "seconds": round(elapsed, 1),
        "kinds": {k: {"tried": tally.tried[k], "answers": dict(tally.answers[k])} for k in sorted(tally.tried)},
        "acked_spans": len(tally.acked), "stored_spans": final["rows"],
        "lost": len(tally.acked - stored),
        "peak_rss_mb": round(final["peak_rss"] / 2**20), "rss_bound_mb": RSS_BOUND >> 20,
        "budget_peak_mb": round(final["budget_peak"] / 2**20, 1), "budget_mb": final["budget"] >> 20,
        "good_p50_ms": pct(0.5), "good_p99_ms": pct(0.99), "good_max_ms": lat[-1] * 1000 if lat else None,
        "good_requests": len(lat), "receiver": final["stats"], "stderr": err[-2000:],
    }


def table(res: dict) -> str:
    lines = [f"fault campaign: {res['seconds']} s, receiver with default limits, loopback", "",
             f"{'kind of fault':<34}{'tried':>7}  answers"]
    for k, v in res["kinds"].items():
        answers = ", ".join(f"{a}: {n}" for a, n in sorted(v["answers"].items()))
        lines.append(f"{k:<34}{v['tried']:>7}  {answers}")
    lines += ["", f"acked spans {res['acked_spans']:,}   stored spans {res['stored_spans']:,}   "
                  f"lost {res['lost']} (must be 0)",
              f"peak RSS {res['peak_rss_mb']} MiB (bound {res['rss_bound_mb']} MiB); decoded bytes in flight peaked at "
              f"{res['budget_peak_mb']} MiB of the {res['budget_mb']} MiB budget",
              f"well-behaved client during the faults: {res['good_requests']} requests, p50 "
              f"{res['good_p50_ms']:.1f} ms, p99 {res['good_p99_ms']:.1f} ms, max {res['good_max_ms']:.1f} ms"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--big-mb", type=float, default=10.0, help="size of the two large senders' bodies (MB)")
    ap.add_argument("--only", help="comma-separated fault workers (e.g. big,idle_flood); default all")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--good", metavar="ENDPOINT", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--idle-timeout", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--read-timeout", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.idle_timeout, args.read_timeout)
    if args.good:
        return good_client(args.good, args.seconds)
    res = campaign(args.minutes * 60, big_mb=args.big_mb, only=set(args.only.split(",")) if args.only else None)
    print(json.dumps(res) if args.json else table(res))
    return 0 if res["lost"] == 0 and res["peak_rss_mb"] <= res["rss_bound_mb"] else 1


if __name__ == "__main__":
    sys.exit(main())
