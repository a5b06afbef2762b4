"""Live mode against real servers started here on loopback: a Prometheus (Debian package) scraping a
test target or backfilled with promtool, and the OTLP receiver fed by the real opentelemetry-sdk exporter."""
import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from triage.analyzers.constraints import Constraints
from triage.sessions.live import LiveSession
from triage.collectors.prometheus import Credentials, PrometheusError, PrometheusSource
from triage.collectors.store import Store
from conftest import ROOT, SAMPLES, wait_until
from promserver import PROMTOOL, Prometheus, Target, free_port, need_prometheus


# -- a Triton/DCGM target whose GPU idles while requests wait --------------------------------------

class IdleGpuTarget:
    def __init__(self):
        self.t0 = time.time()
        self.target = Target(self.respond)

    def respond(self, handler):
        n = int((time.time() - self.t0) * 20)
        body = (
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
            'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-test",Hostname="h",modelName="NVIDIA A10G"} 14\n'
            "# TYPE nv_inference_count counter\n"
            f'nv_inference_count{{model="clf",version="1"}} {n}\n'
            "# TYPE nv_inference_exec_count counter\n"
            f'nv_inference_exec_count{{model="clf",version="1"}} {n}\n'
            "# TYPE nv_inference_pending_request_count gauge\n"
            'nv_inference_pending_request_count{model="clf",version="1"} 3\n')
        return 200, body.encode(), {"Content-Type": "text/plain; version=0.0.4"}


@pytest.fixture(scope="module")
def idle_gpu_prometheus(tmp_path_factory):
    """One real Prometheus scraping an idle-GPU target, shared by the module's tests (they only read it)."""
    need_prometheus()
    tgt = IdleGpuTarget()
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), targets=[tgt.target.address])
    try:
        prom.wait_for_series("DCGM_FI_DEV_GPU_UTIL")
        # a few scrapes, so that range queries ending now see data
        wait_until(lambda: _points_in_last_minute(prom.url, "DCGM_FI_DEV_GPU_UTIL") >= 3, 30,
                   "three scrapes of the idle-GPU target")
        yield prom
    finally:
        prom.stop()
        tgt.target.stop()


def _points_in_last_minute(url: str, metric: str) -> int:
    r = requests.get(f"{url}/api/v1/query", params={"query": f"count_over_time({metric}[1m])"}, timeout=5).json()
    return int(float(r["data"]["result"][0]["value"][1])) if r["data"]["result"] else 0


def _emit_queued_requests(endpoint: str, n: int = 120, between=None):
    """An OTel-instrumented gateway calling a Triton-like server whose requests mostly wait in its queue.
    The gateway's spans are exported first; ``between()``, when given, runs before Triton's are."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    providers = []
    tracers = {}
    for svc in ("gateway", "triton"):
        tp = TracerProvider(resource=Resource.create({"service.name": svc}))
        # exported when flushed below, not on the processor's own 5 s timer
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=60_000))
        providers.append(tp)
        tracers[svc] = tp.get_tracer(svc)
    import random

    rng = random.Random(7)
    now = time.time_ns() - 60 * 10**9
    ms = 10**6
    for i in range(n):
        t = now + i * 400 * ms
        wait = int(rng.expovariate(1 / 55) * ms) + 2 * ms  # contention: spread out, not a timer's plateau
        root = tracers["gateway"].start_span("POST /v1/embed", kind=SpanKind.SERVER, start_time=t,
                                             attributes={"http.route": "/v1/embed"})
        ctx = trace.set_span_in_context(root)
        cl = tracers["gateway"].start_span("POST triton /v2/models/clf/infer", context=ctx, kind=SpanKind.CLIENT,
                                           start_time=t + 1 * ms)
        m = tracers["triton"].start_span("clf", context=trace.set_span_in_context(cl), kind=SpanKind.SERVER,
                                         start_time=t + 2 * ms, attributes={"triton.model_name": "clf"})
        m.add_event("QUEUE_START", timestamp=t + 2 * ms)
        c = tracers["triton"].start_span("compute", context=trace.set_span_in_context(m), kind=SpanKind.SERVER,
                                         start_time=t + 2 * ms + wait)
        c.add_event("COMPUTE_START", timestamp=t + 2 * ms + wait)
        c.end(end_time=t + wait + 17 * ms)
        m.end(end_time=t + wait + 18 * ms)
        cl.end(end_time=t + wait + 20 * ms)
        root.end(end_time=t + wait + 22 * ms)
    for i, tp in enumerate(providers):
        if i and between:
            between()
        tp.force_flush()
        tp.shutdown()
    return 4 * n


class Child:
    """A `triage` command in a child process; what it says on stderr is read as it comes, to wait on."""

    def __init__(self, args, out_path):
        self.out_path = out_path
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "triage", *args], cwd=ROOT, stdout=out,
                                         stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def said(self, pattern: str, timeout: float = 60) -> re.Match:
        """The first stderr line matching ``pattern``, once it has been printed."""
        def seen():
            found = next((m for line in list(self.lines) if (m := re.search(pattern, line))), None)
            if found is None and self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"exited with {self.proc.returncode} without saying {pattern!r}: {self.err}")
            return found
        return wait_until(seen, timeout, f"{pattern!r} on the stderr of {self.proc.args[3:5]}")

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc, self.out_path.read_text()

    @property
    def err(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def child(tmp_path):
    """Start `triage` commands (``child(*args)``); any still running when the test ends is killed."""
    made = []

    def start(*args):
        made.append(Child(args, tmp_path / f"child{len(made)}.stdout"))
        return made[-1]

    yield start
    for c in made:
        c.kill()


RECEIVING = r"receiving OTLP on (http://\S+/v1/traces)"


def test_live_headless_reports_the_right_finding(idle_gpu_prometheus, child):
    proc = child("live", "--otlp-listen", "127.0.0.1:0", "--prometheus", idle_gpu_prometheus.url, "--window", "5m",
                 "--refresh", "2s", "--settle", "3s", "--for", "12s", "--format", "json")
    sent = _emit_queued_requests(proc.said(RECEIVING).group(1))
    rc, out = proc.wait()
    assert rc == 0, proc.err
    rep = json.loads(out)
    assert rep["inputs"]["spans"] == sent
    assert rep["findings"][0]["rule"] == "gpu-underutilized", rep["findings"][0]
    assert rep["findings"][0]["evidence"]["mean_utilization"] == pytest.approx(0.14)


def test_prometheus_source_pushes_aggregation_down(idle_gpu_prometheus):
    src = PrometheusSource(idle_gpu_prometheus.url)
    assert {"DCGM_FI_DEV_GPU_UTIL", "nv_inference_count"} <= src.present_metrics()
    queries = dict(src.queries())
    assert queries["nv_inference_count"] == "sum by (model, version) (nv_inference_count)"
    store = Store()
    now = datetime.now(timezone.utc)
    n = src.fetch(store, now - timedelta(minutes=2), now, step_s=1)
    assert n > 0
    # aggregated server-side: the instance/job labels are gone
    labels = store.scalar("SELECT labels FROM samples WHERE metric = 'nv_inference_count' LIMIT 1")
    assert labels == {"model": "clf", "version": "1"}
    # a refresh replaces the window rather than duplicating it
    n2 = src.fetch(store, now - timedelta(minutes=2), now, step_s=1)
    assert store.scalar("SELECT count(*) FROM samples") == n2


def test_backfilled_capture_gives_the_same_metric_finding(tmp_path):
    """The gpu-idle sample's metrics, backfilled into a real Prometheus with promtool, then queried back:
    the rule sees the same GPU utilization as from the file."""
    need_prometheus()
    from triage.sessions.offline import analyze

    om = tmp_path / "metrics.om"
    lines = []
    for line in (SAMPLES / "gpu-idle" / "metrics.prom").read_text().splitlines():
        if line.startswith("#"):
            if line.startswith("# TYPE"):
                lines.append(line)
            continue
        name_labels, value, ts = line.rsplit(" ", 2)
        lines.append(f"{name_labels} {value} {int(ts) / 1000:.3f}")
    om.write_text("\n".join(lines) + "\n# EOF\n")
    data = tmp_path / "data"
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)], check=True,
                   capture_output=True)
    prom = Prometheus(tmp_path, storage=data)
    try:
        from_file = analyze([SAMPLES / "gpu-idle"])
        store = Store()
        start = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
        PrometheusSource(prom.url).fetch(store, start, start + timedelta(seconds=80), step_s=2)
        traces_only = [p for p in (SAMPLES / "gpu-idle" / "otlp").iterdir()]
        from triage.collectors.ingest import ingest_paths

        ingest_paths(store, traces_only)
        from triage.analyzers import engine

        engine.prepare(store, Constraints())
        live = {f.rule: f for f in engine.run_rules(store, Constraints())}
        ref = {f.rule: f for f in from_file.findings}
        assert live["gpu-underutilized"].severity == ref["gpu-underutilized"].severity
        assert live["gpu-underutilized"].evidence["mean_utilization"] == pytest.approx(
            ref["gpu-underutilized"].evidence["mean_utilization"], abs=0.02)
        assert live["gpu-underutilized"].evidence["avg_batch_size"] == {"clf": 1.0}
    finally:
        prom.stop()


# -- faults ---------------------------------------------------------------------------------------

@pytest.fixture
def target():
    """Make loopback HTTP targets (``target(respond)``); all are stopped when the test ends."""
    made = []

    def make(respond):
        made.append(Target(respond))
        return made[-1]

    yield make
    for t in made:
        t.stop()


@pytest.mark.parametrize("case,expect", [
    ("down", "unreachable"), ("slow", "did not answer in time"), ("5xx", "503"), ("garbage", "not Prometheus JSON"),
])
def test_prometheus_faults_become_clear_errors(case, expect, target):
    gave_up = threading.Event()
    if case == "down":
        src = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    else:
        def respond(h):
            if case == "slow":
                gave_up.wait(30)  # answers only once the client has given up (its timeout is 1 s)
                return 200, b"{}", {}
            if case == "5xx":
                return 503, b"overloaded", {}
            return 200, b"<html>proxy login</html>", {"Content-Type": "text/html"}
        src = PrometheusSource(target(respond).url, timeout_s=1)
    try:
        with pytest.raises(PrometheusError) as exc:
            src.present_metrics()
    finally:
        gave_up.set()
    assert expect in str(exc.value)


class ArrivalClock:
    """The receiver's arrival clock (``Receiver.clock``, monotonic ns), injected: it moves only when told."""

    def __init__(self):
        self.ns = time.monotonic_ns()

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def test_a_trace_is_analysed_once_its_late_spans_have_arrived():
    """The gateway exports first, Triton later (as their batch exporters do): until the trace has settled it is
    held back, because analysed without Triton's spans every request would look as if it never queued."""
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=1.5).start()
    clock = s._receiver.clock = ArrivalClock()
    early = {}

    def before_triton():
        early["snap"] = s.refresh()

    try:
        _emit_queued_requests(s.otlp_endpoint, n=30, between=before_triton)
        snap = s.refresh()
        assert snap.report["inputs"]["spans"] == 0 and snap.status["settling"]["spans"] == 120
        clock.advance(1.4)
        snap = s.refresh()
        assert snap.report["inputs"]["spans"] == 0 and snap.status["settling"]["spans"] == 120  # not quite settled
        clock.advance(0.2)
        snap = s.refresh()
    finally:
        s.stop()
    first = early["snap"]
    assert first.report["inputs"]["spans"] == 0
    assert first.status["settling"] == {"spans": 60, "traces": 30, "settle_s": 1.5}
    assert snap.report["inputs"]["spans"] == 120 and snap.status["settling"]["spans"] == 0
    queued = s.store.scalar("SELECT count(DISTINCT trace_id) FROM request_stages WHERE stage = 'queue'")
    assert queued == 30  # every request has its Triton queue time


def test_stopping_a_live_session_keeps_what_was_still_settling():
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=60).start()
    try:
        sent = _emit_queued_requests(s.otlp_endpoint, n=10)
        assert s.refresh().report["inputs"]["spans"] == 0
    finally:
        s.stop()
    assert s.store.scalar("SELECT count(*) FROM spans") == sent
    assert s.store.scalar("SELECT count(*) FROM span_events") == 2 * 10
    assert s.store.scalar("SELECT count(*) FROM pending_spans") == 0


def test_a_bounded_run_reports_the_traces_begun_in_it():
    """``finish()`` (``triage live --for``) waits one settle period for the traces begun so far, and leaves out
    the ones begun during that wait."""
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=0.5).start()
    read_clock, late = s._receiver.clock, {}
    finishing = threading.get_ident()

    def clock():
        """finish() reads the arrival clock for its cut, then waits: the late traffic comes right after the cut."""
        cut = read_clock()
        if threading.get_ident() == finishing and "sent" not in late:
            late["sent"] = _emit_queued_requests(s.otlp_endpoint, n=5)
        return cut

    try:
        before = _emit_queued_requests(s.otlp_endpoint, n=20)
        s._receiver.clock = clock
        snap = s.finish()
    finally:
        s.stop()
    assert late, "finish() took no cut from the receiver's clock"
    assert snap.report["inputs"]["spans"] == before == 80
    assert snap.status["settling"]["spans"] == late["sent"] == 20


def test_settle_must_fit_the_window():
    with pytest.raises(ValueError, match="under half the 60s window"):
        LiveSession(Constraints(), listen=None, window_s=60, settle_s=30).start()
    out = subprocess.run([sys.executable, "-m", "triage", "live", "--otlp-listen", "off", "--window", "1m",
                          "--settle", "40s", "--for", "1s"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "settle time 40s must be under half the 60s window" in out.stderr


def test_a_bounded_run_that_received_nothing_exits_2():
    out = subprocess.run([sys.executable, "-m", "triage", "live", "--otlp-listen", "127.0.0.1:0",
                          "--settle", "0", "--for", "1s", "--format", "json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "nothing received in 1s" in out.stderr
    assert json.loads(out.stdout)["inputs"]["spans"] == 0  # the (empty) report is still printed


def test_live_session_marks_stale_and_backs_off_while_traces_flow():
    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), prometheus_url=f"http://127.0.0.1:{free_port()}",
                    window_s=600, settle_s=0).start()
    try:
        _emit_queued_requests(s.otlp_endpoint, n=20)
        snap = s.refresh()
        assert snap.status["prometheus"].startswith("stale:") and "unreachable" in snap.status["prometheus"]
        assert snap.report["inputs"]["spans"] == 80
        first_backoff = s._backoff_s
        snap2 = s.refresh()  # within the backoff: no new attempt, still stale
        assert s._backoff_s == first_backoff and snap2.status["prometheus"].startswith("stale:")
        assert len(s.snapshots) == 2
    finally:
        s.stop()


def test_series_that_appear_later_are_discovered(target):
    """A Prometheus that has not scraped yet (the demo starts both together) lists no series; the source asks
    again rather than querying nothing for the rest of the session."""
    names = []

    def respond(h):
        return 200, json.dumps({"status": "success", "data": list(names)}).encode(), {"Content-Type": "application/json"}

    tgt = target(respond)
    src = PrometheusSource(tgt.url)
    assert src.queries() == []
    names.append("DCGM_FI_DEV_GPU_UTIL")
    assert src.queries() == []  # an empty list is trusted for rediscover_empty_s
    src.rediscover_empty_s = 0
    assert [m for m, _ in src.queries()] == ["DCGM_FI_DEV_GPU_UTIL"]
    names.append("nv_inference_count")
    assert [m for m, _ in src.queries()] == ["DCGM_FI_DEV_GPU_UTIL"]  # a known list for rediscover_s
    src.rediscover_s = 0
    assert {m for m, _ in src.queries()} == {"DCGM_FI_DEV_GPU_UTIL", "nv_inference_count"}
    tgt.stop()  # Prometheus gone: the list already known is kept, the range queries will say what failed
    assert {m for m, _ in src.queries()} == {"DCGM_FI_DEV_GPU_UTIL", "nv_inference_count"}


def test_credentials_come_from_env_or_file_and_are_never_printed(tmp_path, target):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token\n")
    creds = Credentials.from_env({"TRIAGE_PROMETHEUS_BEARER_TOKEN_FILE": str(secret)})
    assert creds.bearer == "s3cr3t-token" and "s3cr3t" not in repr(creds)
    seen = []

    def respond(h):
        seen.append(h.headers.get("Authorization"))
        return 200, json.dumps({"status": "success", "data": []}).encode(), {"Content-Type": "application/json"}

    PrometheusSource(target(respond).url, credentials=creds).present_metrics()
    assert seen == ["Bearer s3cr3t-token"]
    basic = Credentials.from_env({"TRIAGE_PROMETHEUS_USERNAME": "u", "TRIAGE_PROMETHEUS_PASSWORD": "p"})
    assert basic.basic == ("u", "p") and "p'" not in repr(basic)


def test_tls_verification_is_on_by_default(tmp_path, target):
    """A self-signed HTTPS endpoint is refused unless its CA is given."""
    import ssl

    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.skip("openssl not available to make a test certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tgt = target(lambda h: (200, json.dumps({"status": "success", "data": ["DCGM_FI_DEV_GPU_UTIL"]}).encode(),
                            {"Content-Type": "application/json"}))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tgt.server.socket = ctx.wrap_socket(tgt.server.socket, server_side=True)
    url = tgt.url.replace("http://", "https://")
    with pytest.raises(PrometheusError, match="TLS verification failed"):
        PrometheusSource(url, timeout_s=2).present_metrics()
    assert PrometheusSource(url, ca_file=str(cert), timeout_s=2).present_metrics() == {"DCGM_FI_DEV_GPU_UTIL"}


def test_live_capture_replay_gives_the_same_findings(tmp_path, idle_gpu_prometheus):
    from triage.collectors.export import write_metrics, write_traces
    from triage.sessions.offline import analyze

    s = LiveSession(Constraints(), listen=("127.0.0.1", 0), prometheus_url=idle_gpu_prometheus.url,
                    window_s=600, settle_s=0).start()
    try:
        _emit_queued_requests(s.otlp_endpoint, n=60)
        live = s.refresh()
    finally:
        s.stop()
    out = tmp_path / "capture"
    out.mkdir()
    write_traces(s.store, out / "traces.otlp.jsonl")
    write_metrics(s.store, out / "metrics.prom")
    replay = analyze([out]).report()
    key = lambda rep: [(f["rule"], f["severity"]) for f in rep["findings"]]  # noqa: E731
    assert key(replay) == key(live.report)
    assert replay["latency"] == live.report["latency"]
    assert replay["inputs"]["spans"] == live.report["inputs"]["spans"]


def test_capture_command_writes_a_replayable_folder(tmp_path, child):
    out = tmp_path / "cap"
    cons = tmp_path / "triage.toml"
    cons.write_text("[slo]\np95_ms = 50\n")
    proc = child("capture", "--out", str(out), "--for", "4s", "--settle", "3s", "--otlp-listen", "127.0.0.1:0",
                 "--constraints", str(cons))
    endpoint = proc.said(RECEIVING).group(1)
    # the gateway's spans arrive within the 4 s, Triton's only once the 4 s are over (its exporter's last
    # batch): the capture waits --settle for them, so its traces are whole
    sent = _emit_queued_requests(endpoint, n=25, between=lambda: proc.said("waiting 3s for the last traces"))
    rc, _ = proc.wait()
    assert rc == 0, proc.err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.prom", "traces.otlp.jsonl", "triage.toml"]
    rep = subprocess.run([sys.executable, "-m", "triage", "report", str(out), "--format", "json"], cwd=ROOT,
                         capture_output=True, text=True)
    data = json.loads(rep.stdout)
    assert data["inputs"]["spans"] == sent and data["latency"]["gateway POST /v1/embed"]["requests"] == 25
    # refuses to overwrite
    again = subprocess.run([sys.executable, "-m", "triage", "capture", "--out", str(out), "--for", "1s",
                            "--otlp-listen", "off"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
