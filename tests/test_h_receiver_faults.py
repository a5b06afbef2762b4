"""The OTLP/HTTP receiver under damaged, hostile and huge input (issue 11) and its exposure (issue 12): every
acknowledged span is stored, bad data is answered 400 or partial success (never a retry), load is answered
503 + Retry-After, and nothing stalls it. Loopback only, bounded in count and time."""
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from triage.analyzers.constraints import Constraints
from triage.sessions.live import LiveSession
from triage.sessions.staging import Staging
from triage.collectors.receiver import ListenError, Receiver, exposure, parse_listen, token_from_env
from triage.collectors.store import Store
from conftest import ROOT

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


@pytest.fixture
def receiver():
    store = Store()
    with Receiver(store, port=0) as r:
        yield r


def _pb_request(n: int, first: int = 0, end_offset_ns: int = 0, **span_fields) -> bytes:
    """n spans of distinct ids (from ``first``), ending now (+ ``end_offset_ns``)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    ss = rs.scope_spans.add()
    now = time.time_ns() + end_offset_ns
    for i in range(first, first + n):
        sp = ss.spans.add()
        sp.trace_id = (i + 1).to_bytes(16, "big")
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.name = "op"
        sp.start_time_unix_nano, sp.end_time_unix_nano = now - 5_000_000, now
        for k, v in span_fields.items():
            setattr(sp, k, v)
    return req.SerializeToString()


def _json_span(i: int, **fields) -> dict:
    now = time.time_ns()
    return {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "op",
            "startTimeUnixNano": str(now - 5_000_000), "endTimeUnixNano": str(now), **fields}


def _json_body(*spans) -> bytes:
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": list(spans)}]}]}).encode()


def _stored(store) -> int:
    return store.scalar("SELECT count(*) FROM spans")


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server answers before it closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                out += piece
                if b"\r\n\r\n" in out and b"Content-Length" in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(body) >= n:
                        break
        except socket.timeout:
            pass
    return out


# -- acknowledged data lost ------------------------------------------------------------------------

def test_chunked_body_is_read_whole(receiver):
    body = _pb_request(25)
    r = requests.post(receiver.endpoint, data=(body[i:i + 100] for i in range(0, len(body), 100)), headers=PB,
                      timeout=10)  # a generator: Transfer-Encoding: chunked
    assert r.status_code == 200
    assert _stored(receiver.store) == 25
    assert receiver.stats.bad_requests == 0


def test_every_member_of_a_multi_member_gzip_body_is_read(receiver):
    body = gzip.compress(_pb_request(7)) + gzip.compress(_pb_request(9, first=7))  # valid per RFC 1952
    r = requests.post(receiver.endpoint, data=body, headers={**PB, "Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 200
    assert _stored(receiver.store) == 16


@pytest.mark.parametrize("shape", ["scopeSpans-object", "spans-object", "span-string"])
def test_wrong_shaped_json_is_rejected_out_loud(receiver, shape):
    good = {"spans": [_json_span(0)]}
    bad = {"scopeSpans-object": {"scopeSpans": {"spans": [_json_span(1), _json_span(2)]}},
           "spans-object": {"scopeSpans": [{"spans": {"0": _json_span(1)}}]},
           "span-string": {"scopeSpans": [{"spans": ["a span"]}]}}[shape]
    doc = {"resourceSpans": [{"scopeSpans": [good]}, bad]}
    r = requests.post(receiver.endpoint, data=json.dumps(doc), headers=JS, timeout=10)
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) >= 1 and partial["errorMessage"]
    assert _stored(receiver.store) == 1
    # nothing valid at all: 400, not 200 {}
    r = requests.post(receiver.endpoint, data=json.dumps({"resourceSpans": [bad]}), headers=JS, timeout=10)
    assert r.status_code == 400 and r.json()["message"]


def _sender(endpoint: str, acked: list, stop: threading.Event, first: int = 10_000):
    """Posts one new span at a time until the receiver goes away (or ``stop``); records the acknowledged ones."""
    s = requests.Session()
    i = first
    while not stop.is_set():
        try:
            r = s.post(endpoint, data=_pb_request(1, first=i), headers=PB, timeout=5)
        except requests.RequestException:
            return
        if r.status_code == 200:
            acked.append(i)
        i += 1


def test_a_bounded_live_run_counts_every_acknowledged_span():
    """Spans acknowledged while ``finish()`` runs are in its report or in its "not in this report" count."""
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=0.5).start()
    acked: list = []
    stop = threading.Event()
    t = threading.Thread(target=_sender, args=(s.otlp_endpoint, acked, stop))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        snap = s.finish()
        n_at_snapshot = len(acked)
        # the sender keeps trying after the last snapshot: nothing more may be acknowledged
        for _ in range(200):
            if not t.is_alive():
                break
            t.join(0.01)
        stop.set()
        t.join()
    finally:
        s.stop()
    assert n_at_snapshot >= 20
    counted = snap.report["inputs"]["spans"] + snap.status["settling"]["spans"]
    assert counted == len(acked), (counted, len(acked))


def test_spans_from_an_exporter_whose_clock_is_behind_are_analysed():
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=900, settle_s=0).start()
    try:
        r = requests.post(s.otlp_endpoint, data=_pb_request(12, end_offset_ns=-20 * 60 * 10**9), headers=PB,
                          timeout=10)
        assert r.status_code == 200
        snap = s.refresh()
    finally:
        s.stop()
    assert snap.report["inputs"]["spans"] == 12
    problems = snap.report["inputs"]["problems"]["items"]
    assert any("clock skew" in p["message"] and "behind" in p["message"] for p in problems), problems


def test_the_live_window_drops_traces_by_arrival():
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=0).start()
    try:
        requests.post(s.otlp_endpoint, data=_pb_request(3), headers=PB, timeout=10)
        assert s.refresh().report["inputs"]["spans"] == 3
        assert s._staging.forget(s._receiver.clock()) == 3  # all arrived before now
        assert s.store.scalar("SELECT count(*) FROM spans") == 0
    finally:
        s.stop()


@pytest.mark.parametrize("staging", [False, True])
def test_duplicates_are_stored_once_and_counted(staging):
    store = Store()
    body = _pb_request(1)
    with Receiver(store, port=0, staging=staging) as r:
        s = requests.Session()
        codes = {s.post(r.endpoint, data=body, headers=PB, timeout=10).status_code for _ in range(300)}
        s.post(r.endpoint, data=_pb_request(14, first=1), headers=PB, timeout=10)
        if staging:
            Staging(r).promote()
    assert codes == {200}
    assert _stored(store) == 15
    assert r.stats.duplicate_spans == 299
    assert [p["message"].split()[0] for p in r.all_problems().items if "duplicate" in p["message"]] == ["299"]


# -- poison values ---------------------------------------------------------------------------------

POISON = {
    "pb end 2**63+5": ("pb", {"end_time_unix_nano": 2**63 + 5}),
    "pb kind 2**31-1": ("pb", {"kind": 2**31 - 1}),
    "json kind 300": ("json", {"kind": 300}),
    "json status 1000": ("json", {"status": {"code": 1000}}),
    "json http status 2**40": ("json", {"attributes": [{"key": "http.response.status_code",
                                                        "value": {"intValue": str(2**40)}}]}),
    "json resend 2**33": ("json", {"attributes": [{"key": "http.request.resend_count",
                                                   "value": {"intValue": str(2**33)}}]}),
    "json intValue 2**64": ("json", {"attributes": [{"key": "big", "value": {"intValue": str(2**64 + 1)}}]}),
    "json arrayValue 300 deep": ("json", "deep"),
}


def _deep(n):
    v = {"stringValue": "x"}
    for _ in range(n):
        v = {"arrayValue": {"values": [v]}}
    return v


@pytest.mark.parametrize("case", list(POISON))
def test_poison_values_are_never_answered_with_a_retry(receiver, case, capfd):
    """One good span and one poisoned span in a batch: 200 with the poisoned one rejected (or clamped and
    counted), or 400; never 503 (an exporter would send it for ever, the good span with it), never a dropped
    connection or a traceback."""
    kind, fields = POISON[case]
    if kind == "pb":
        req = ExportTraceServiceRequest()
        req.ParseFromString(_pb_request(1))
        poisoned = ExportTraceServiceRequest()
        poisoned.ParseFromString(_pb_request(1, first=1, **fields))
        req.resource_spans[0].scope_spans[0].spans.append(poisoned.resource_spans[0].scope_spans[0].spans[0])
        r = requests.post(receiver.endpoint, data=req.SerializeToString(), headers=PB, timeout=10)
    else:
        if fields == "deep":
            fields = {"attributes": [{"key": "deep", "value": _deep(300)}]}
        r = requests.post(receiver.endpoint, data=_json_body(_json_span(0), _json_span(1, **fields)), headers=JS,
                          timeout=10)
    assert r.status_code in (200, 400), (r.status_code, r.content[:300])
    if r.status_code == 200:
        stored = receiver.store.query("SELECT span_id FROM spans ORDER BY span_id")
        assert (f"{1:016x}",) in stored  # the good span
        assert receiver.problems.count >= 1  # the poisoned one: rejected or clamped, and said so
    else:
        assert _stored(receiver.store) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("length", ["abc", "-1", "1e3"])
def test_a_bad_content_length_is_answered_400(receiver, length, capfd, caplog):
    out = _raw(receiver.port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                              b"Content-Length: " + length.encode() + b"\r\n\r\n" + b"\0" * 64)
    assert out[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), out[:200]
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info], caplog.text


# -- memory and time bounds ------------------------------------------------------------------------

def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_all(receiver):
    sent = [0]

    def body():
        for _ in range(64):  # 32 MiB offered, twice the limit
            sent[0] += 1
            yield b"\x0a" * (512 << 10)

    try:
        r = requests.post(receiver.endpoint, data=body(), headers=PB, timeout=30)
        assert r.status_code == 413
    except requests.ConnectionError:
        pass  # the server answered 413 and closed while the client was still sending
    assert sent[0] < 64
    assert receiver.budget.used == 0


def test_concurrent_large_bodies_stay_within_one_memory_budget():
    """8 gzip bodies of ~2 MB, each decompressing to 48 MiB: together far over the budget. Some wait (503 +
    Retry-After), none is lost, and the decoded bytes in flight never exceed the budget."""
    store = Store()
    n = 48 << 20  # decodes to 48 MiB: one unknown bytes field (parsed fast, so the test is about memory)
    big = gzip.compress(b"\x7a" + bytes([0x80 | (n & 0x7F), 0x80 | (n >> 7 & 0x7F), 0x80 | (n >> 14 & 0x7F), n >> 21])
                        + b"\0" * n)
    with Receiver(store, port=0) as r:
        results = []

        def post():
            results.append(requests.post(r.endpoint, data=big, headers={**PB, "Content-Encoding": "gzip"},
                                         timeout=60))
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        small = requests.post(r.endpoint, data=_pb_request(3), headers=PB, timeout=10)
        peak = r.budget.peak
    codes = sorted(x.status_code for x in results)
    assert set(codes) <= {200, 503} and 503 in codes, codes
    assert all(x.headers["Retry-After"] for x in results if x.status_code == 503)
    assert peak <= r.budget.limit
    assert small.status_code == 200 and _stored(store) == 3
    assert r.budget.used == 0


def test_idle_and_header_less_connections_are_closed():
    store = Store()
    with Receiver(store, port=0, idle_timeout_s=1.0) as r:
        idle = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # headers that never finish
        t0 = time.monotonic()
        assert idle.recv(100) == b"" and slow.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 4
        idle.close()
        slow.close()


def test_a_flood_of_idle_connections_does_not_lock_out_a_good_client():
    """The receiver runs in a process limited to 128 open files; 200 idle connections are opened to it. The
    longest-idle ones make room, so a good request is still answered."""
    code = ("import resource,sys,json; resource.setrlimit(resource.RLIMIT_NOFILE,(128,128));"
            "from triage.collectors.receiver import Receiver; from triage.collectors.store import Store;"
            "r=Receiver(Store(),port=0).start(); print(r.port,flush=True);"
            "sys.stdin.read(); r.stop()")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    conns = []
    try:
        port = int(child.stdout.readline())
        for _ in range(200):
            try:
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        t0 = time.monotonic()
        r = requests.post(f"http://127.0.0.1:{port}/v1/traces", data=_pb_request(2), headers=PB, timeout=10)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 5
    finally:
        for c in conns:
            c.close()
        child.communicate("", timeout=30)


def test_the_listen_backlog_is_not_five(receiver):
    out = subprocess.run(["ss", "-ltnH", f"sport = :{receiver.port}"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip("ss not available")
    backlog = int(out.stdout.split()[2])  # Send-Q of a listening socket: its backlog
    assert backlog >= 128


# -- exposure (issue 12) ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,expect", [
    ("localhost", ("localhost", 4318)), ("[::1]:4318", ("::1", 4318)), ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    (":4319", ("127.0.0.1", 4319)), ("off", None), ("0.0.0.0:4318", ("0.0.0.0", 4318)), ("[::1]", ("::1", 4318)),
])
def test_listen_addresses(text, expect):
    assert parse_listen(text) == expect


@pytest.mark.parametrize("text", ["host:port", "127.0.0.1:99999", "[::1", "host:"])
def test_bad_listen_addresses_say_what_is_expected(text):
    with pytest.raises(ListenError, match="--otlp-listen"):
        parse_listen(text)


def test_a_busy_port_names_itself_and_the_option_that_moves_it():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "triage", "live", "--otlp-listen", f"127.0.0.1:{port}",
                              "--for", "1s"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"127.0.0.1:{port}" in out.stderr and "already in use" in out.stderr and "--otlp-listen" in out.stderr
    assert "Traceback" not in out.stderr


def test_localhost_and_ipv6_loopback_are_accepted():
    store = Store()
    with Receiver(store, host="localhost", port=0) as r:
        assert requests.post(r.endpoint, data=_pb_request(1), headers=PB, timeout=10).status_code == 200
    if not socket.has_ipv6:
        return
    try:
        r6 = Receiver(Store(), host="::1", port=0)
    except ListenError:
        pytest.skip("no IPv6 loopback here")
    with r6:
        assert r6.endpoint.startswith("http://[::1]:")
        assert requests.post(r6.endpoint, data=_pb_request(1), headers=PB, timeout=10).status_code == 200


def test_a_reachable_receiver_needs_tls_and_a_token_or_says_it_is_insecure():
    with pytest.raises(ListenError, match="needs TLS .* and a bearer token"):
        exposure("0.0.0.0", tls=False, token=None, insecure=False)
    with pytest.raises(ListenError, match="bearer token"):
        exposure("10.1.2.3", tls=True, token=None, insecure=False)
    assert exposure("10.1.2.3", tls=True, token="t", insecure=False) is None
    assert "anyone who can reach" in exposure("0.0.0.0", tls=False, token=None, insecure=True)
    assert exposure("127.0.0.1", tls=False, token=None, insecure=False) is None
    out = subprocess.run([sys.executable, "-m", "triage", "live", "--otlp-listen", "0.0.0.0:0", "--for", "1s"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_OTLP")})
    assert out.returncode == 2 and "--otlp-insecure" in out.stderr and "Traceback" not in out.stderr


def test_token_from_env_or_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    assert token_from_env({"TRIAGE_OTLP_BEARER_TOKEN_FILE": str(secret)}) == "s3cr3t"
    assert token_from_env({"TRIAGE_OTLP_BEARER_TOKEN": "abc \n"}) == "abc"
    assert token_from_env({}) is None


def _self_signed(tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("openssl not available to make a test certificate")
    return str(cert), str(key)


def test_tls_and_bearer_token(tmp_path):
    cert, key = _self_signed(tmp_path)
    store = Store()
    with Receiver(store, port=0, tls_cert=cert, tls_key=key, token="s3cr3t") as r:
        assert r.endpoint.startswith("https://")
        assert requests.post(r.endpoint, data=_pb_request(1), headers=PB, verify=cert, timeout=10).status_code == 401
        wrong = requests.post(r.endpoint, data=_pb_request(1), headers={**PB, "Authorization": "Bearer nope"},
                              verify=cert, timeout=10)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        ok = requests.post(r.endpoint, data=_pb_request(2), headers={**PB, "Authorization": "Bearer s3cr3t"},
                           verify=cert, timeout=10)
        assert ok.status_code == 200
        with pytest.raises(requests.ConnectionError):  # plain HTTP to the TLS port
            requests.post(r.endpoint.replace("https", "http"), data=_pb_request(1), headers=PB, timeout=5)
    assert _stored(store) == 2 and r.stats.unauthorized == 2


def test_expect_100_continue_is_answered(receiver):
    """curl sends ``Expect: 100-continue`` for bodies over 1 MB and waits for the interim answer."""
    body = _pb_request(3)
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 100")
        s.sendall(body)
        assert s.recv(64).startswith(b"HTTP/1.1 200")
    assert _stored(receiver.store) == 3


def test_live_for_analyses_spans_from_a_clock_20_minutes_behind():
    """The CLI reproduction: an exporter clock 20 min behind gave 200 OK, then "nothing received", exit 2."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "triage", "live", "--otlp-listen", f"127.0.0.1:{port}",
                             "--settle", "0", "--for", "4s", "--format", "json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    deadline = time.monotonic() + 30
    while True:
        try:
            r = requests.post(endpoint, data=_pb_request(12, end_offset_ns=-20 * 60 * 10**9), headers=PB, timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline and proc.poll() is None, "receiver did not come up"
            time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert r.status_code == 200
    assert proc.returncode == 0, err
    rep = json.loads(out)
    assert rep["inputs"]["spans"] == 12
    assert any("clock skew" in p["message"] for p in rep["inputs"]["problems"]["items"])
