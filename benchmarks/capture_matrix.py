"""Record a matrix of incidents from the project's own real stack: ``python -m benchmarks.capture_matrix
[--only NAME ...] [--out DIR] [--load-seconds S] [--list]``.

The stack is started ONCE, on loopback: triage's OTLP receiver (a store of everything received), a real Triton
(nvidia-pytriton's binary, Python backend running the demo ONNX model) exporting its own OpenTelemetry traces to
that receiver, and the demo gateway (OpenTelemetry SDK: tokenize → call to Triton → postprocess). For each
scenario the model's config.pbtxt is rewritten and reloaded (explicit model control), the gateway's tokenizer
cost, timeout and retries are set, and the bounded load generator sends its workload. The traces of the
scenario (spans begun after its load started), Triton's Prometheus text scraped every second (with
timestamps), the config.pbtxt, a triage.toml and a README are written, gzip-compressed, to
``<out>/<name>/``. Everything started is stopped on exit, Ctrl-C and SIGTERM included.

Each scenario's expected first finding is written from the physics of the scenario (what its load, window,
tokenizer and retries do to a request), before and independently of what triage says about it.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "matrix"
FAST = 2.0      # gateway tokenizer cost, µs per token (a compiled tokenizer)
SLOW = 400.0    # a pure-Python tokenizer on the request path
SIZES = [(16, 1), (32, 1), (64, 1), (128, 1)]
LONG_TAIL = [(16, 4), (32, 3), (64, 2), (256, 1)]
# The capacity-bound model: 20 ms per request of a batch, whatever the batch size (batching does not speed it
# up), one instance: capacity ≈ 1 / (20 ms + ~1 ms of compute and overhead) ≈ 45-48 req/s.
PER_REQUEST_MS = 20.0
LIGHT, NEAR, RAMP = (10.0, None), (38.0, None), (10.0, 55.0)  # req/s: light, ρ≈0.8, a ramp through ~47 req/s
TOML = """# The service's constraints for this capture (triage reads the file next to the traces).
[slo]
p95_ms = 100
"""


@dataclass
class Scenario:
    name: str
    what: str                         # what was done, in words
    expect: str                       # expected first finding at warning+, or "" for a healthy capture
    why: str                          # the physics behind the expectation
    window_us: int = 0
    max_batch_size: int = 16
    per_request_ms: float = 0.0
    rate: tuple = LIGHT
    tokenize_us: float = FAST
    sizes: list = field(default_factory=lambda: list(SIZES))
    timeout_s: float = 10.0
    retries: int = 0
    cold_ms: float = 0.0
    cold_s: float = 0.0


def _load_name(rate) -> str:
    return {LIGHT: "light", NEAR: "near", RAMP: "ramp"}.get(rate, f"{rate[0]:g}rps")


def scenarios() -> list[Scenario]:
    out = [
        Scenario("healthy-w1-light", "window 1 ms, 10 req/s Poisson, fast tokenizer, a ~1 ms model", "",
                 "λ·W = 0.01: the 1 ms window is at most 1 ms of each request; the model is ~2% busy; nothing "
                 "queues, nothing is slow: healthy.", window_us=1000),
        Scenario("ramp-w2", "window 2 ms; a model at 20 ms per request (capacity ~47 req/s); load ramps 10 → 55 "
                 "req/s over the capture", "queueing-growth",
                 "arrivals pass the model's capacity four fifths of the way in: the queue grows without bound "
                 "while the rate exceeds ~47 req/s, so queue time dominates the tail; the 2 ms window is at most "
                 "2 ms of it.", window_us=2000, per_request_ms=PER_REQUEST_MS, rate=RAMP),
        Scenario("window50-light", "window 50 ms, 10 req/s, a ~1 ms model", "batching-window",
                 "λ·W = 0.5: a batch rarely fills, so nearly every request waits out the 50 ms window — the "
                 "window is most of p95 at a load far below capacity.", window_us=50_000),
        Scenario("slow-tokenizer", "window 0, 10 req/s, pure-Python tokenizer at 400 µs/token on a long-tailed "
                 "input mix (16-256 tokens)", "preprocessing-share",
                 "a 256-token input spends ~100 ms tokenizing while the model answers in ~1 ms: preprocessing "
                 "is the tail.", tokenize_us=SLOW, sizes=list(LONG_TAIL)),
        Scenario("retries", "window 0, the 20 ms/request model, load ramps 10 → 55 req/s; the gateway times out "
                 "its call to Triton after 150 ms and retries twice at once, no budget", "retry-spiral",
                 "once the queue passes 150 ms each timed-out call is sent again while Triton still runs the "
                 "abandoned one: offered load multiplies exactly when the server is saturated.",
                 per_request_ms=PER_REQUEST_MS, rate=RAMP, timeout_s=0.15, retries=2),
        Scenario("cold-start", "window 0, 10 req/s, load starts right after the model is (re)loaded; the model "
                 "pays 150 ms per execution for its first 3 s (a warm-up cost)", "cold-start",
                 "the first ~30 requests each take ~150 ms more than the ~3 ms steady state.",
                 cold_ms=150.0, cold_s=3.0),
        Scenario("healthy-w0-light", "window 0, 10 req/s, fast tokenizer, a ~1 ms model", "",
                 "nothing waits: no window, ~1% busy, fast preprocessing: healthy."),
    ]
    out += [
        Scenario("healthy-w0-25rps", "window 0, 25 req/s Poisson, fast tokenizer, a ~1 ms model", "",
                 "~3% busy model, no window, fast preprocessing: more traffic than the light captures, still "
                 "nothing waits: healthy.", rate=(25.0, None)),
        Scenario("healthy-w2-25rps", "window 2 ms, 25 req/s Poisson, fast tokenizer, a ~1 ms model", "",
                 "λ·W = 0.05: at most 2 ms of waiting per request on a ~1 ms model; nothing queues: healthy.",
                 window_us=2000, rate=(25.0, None)),
        Scenario("healthy-retries-light", "window 0, 10 req/s; the gateway times out after 150 ms and retries "
                 "twice (the retry policy of the `retries` capture) on a ~1 ms model", "",
                 "nothing comes near the 150 ms timeout, so no call is retried: the policy is present but never "
                 "fires — healthy.", timeout_s=0.15, retries=2),
    ]
    have = {s.name for s in out}
    # the rest of the grid: window × load
    for w in (0, 1, 2, 10, 50):
        for rate in (LIGHT, NEAR, RAMP):
            name = f"w{w}-{_load_name(rate)}"
            if (w, rate) in ((1, LIGHT), (2, RAMP), (50, LIGHT), (0, LIGHT)) or name in have:
                continue
            if (w, rate) == (50, NEAR):
                # left out: at ρ ≈ 0.8 a 50 ms window and the queue it replaces are of the same size (the
                # instance idles up to 50 ms, but without the window the M/D/1 wait is ~40 ms on average),
                # so no one first finding follows from the physics
                continue
            if rate == LIGHT:
                expect = "batching-window" if w >= 10 else ""
                why = (f"10 req/s, λ·W = {0.01 * w:.2f}: batches rarely fill, so each request waits out the "
                       f"{w} ms window; " + ("that is most of a ~3 ms service's p95." if w >= 10 else
                                             "2 ms is small against the ~5-8 ms end-to-end: healthy."))
                out.append(Scenario(name, f"window {w} ms, 10 req/s, a ~1 ms model", expect, why, window_us=w * 1000))
            else:
                what = ("38 req/s steady (ρ ≈ 0.8)" if rate == NEAR else "load ramps 10 → 55 req/s")
                why = ("at ρ ≈ 0.8 the M/D/1 wait is ~2x the 20 ms service time on average and several times it "
                       "at p95: queueing is the tail, the window a few ms of it." if rate == NEAR else
                       "arrivals pass the ~47 req/s capacity: the queue grows while they do.")
                out.append(Scenario(name, f"window {w} ms, the 20 ms/request model (capacity ~47 req/s), {what}",
                                    "queueing-growth", why, window_us=w * 1000, per_request_ms=PER_REQUEST_MS,
                                    rate=rate))
    return out


class Scraper:
    """Triton's /metrics every ``every_s`` seconds while running, kept as Prometheus text with timestamps."""

    def __init__(self, url: str, every_s: float = 1.0):
        self.url, self.every_s = url, every_s
        self.families: dict[str, list[str]] = {}   # family → HELP/TYPE lines
        self.samples: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def scrape(self) -> None:
        import requests

        text = requests.get(self.url, timeout=5).text
        ms = int(time.time() * 1000)
        fam = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                fam = line.split()[2]
                head = self.families.setdefault(fam, [])
                if line not in head:
                    head.append(line)
            elif line and not line.startswith("#") and fam:
                self.samples.setdefault(fam, []).append(f"{line} {ms}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.scrape()
            except Exception:  # noqa: BLE001 - a missed scrape is a gap in the series, as with a real scraper
                pass

    def __enter__(self):
        self.scrape()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.scrape()

    def text(self) -> str:
        return "".join("\n".join(self.families[f] + self.samples.get(f, [])) + "\n" for f in self.families)


def _gz(path: Path, data: bytes) -> None:
    with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime 0: the same capture compresses to the same bytes
        fh.write(data)


class Stack:
    """Receiver + Triton + gateway, started once."""

    def __init__(self, work: Path):
        self.work = work
        self.started: list = []

    def start(self) -> "Stack":
        from triage.collectors.receiver import Receiver
        from triage.collectors.store import Store
        from triage.lab.gateway import Gateway
        from triage.lab.model import write_repo
        from triage.lab.triton_server import Triton, write_model_repository

        work = self.work
        self.store = Store()
        self.receiver = Receiver(self.store, port=0).start()
        self.started.append(self.receiver)
        print("matrix: training and exporting the demo model", file=sys.stderr)
        self.onnx = write_repo(work / "demo")
        self.repo = work / "repository"
        self.mdir = write_model_repository(self.repo, self.onnx, 0)
        print("matrix: starting Triton", file=sys.stderr)
        self.triton = Triton(self.repo, otlp_url=f"127.0.0.1:{self.receiver.port}/v1/traces").start()
        self.started.append(self.triton)
        self.gateway = Gateway(self.triton.url, self.receiver.endpoint).start()
        self.started.append(self.gateway)
        self._write_model = write_model_repository
        return self

    def configure(self, s: Scenario) -> None:
        self._write_model(self.repo, self.onnx, s.window_us, max_batch_size=s.max_batch_size,
                          per_request_ms=s.per_request_ms, cold_ms=s.cold_ms, cold_s=s.cold_s)
        self.triton.load()
        self.gateway.cost, self.gateway.timeout_s, self.gateway.retries = s.tokenize_us, s.timeout_s, s.retries

    def stop(self) -> None:
        for thing in reversed(self.started):
            try:
                thing.stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest anyway
                print(f"matrix: stopping {type(thing).__name__}: {exc}", file=sys.stderr)
        self.started.clear()


def record(stack: Stack, s: Scenario, out: Path, load_s: float) -> dict:
    from triage.collectors.export import write_traces
    from triage.collectors.receiver import wait_until
    from triage.lab import loadgen

    t_begin = time.monotonic()
    stack.configure(s)
    if not s.cold_s:  # warm the freshly loaded model (not recorded): a cold start is its own scenario
        warm = loadgen.Workload(rate_rps=None, concurrency=1, duration_s=1.0, max_requests=20, sizes=[(16, 1)],
                                target="gateway")
        loadgen.run(stack.gateway.url, "clf", warm)
        stack.gateway.provider.force_flush()
        wait_until(lambda: stack.receiver.queue.empty(), timeout=10)
    since = time.time_ns()
    rate, rate_end = s.rate
    w = loadgen.Workload(rate_rps=rate, rate_end_rps=rate_end, duration_s=load_s, seed=7, sizes=s.sizes,
                         target="gateway", timeout_s=5.0, max_requests=int(load_s * max(rate, rate_end or 0) * 2))
    with Scraper(stack.triton.metrics_url) as scraper:
        res = loadgen.run(stack.gateway.url, "clf", w)
        stack.gateway.provider.force_flush()

        def arrived() -> bool:  # Triton exports its spans in batches: wait for those of the requests sent
            n = stack.store.scalar("SELECT count(*) FROM spans WHERE name = 'POST /v1/classify' AND start_ns >= ?",
                                   [since]) or 0
            return n >= res.sent * 0.99 and stack.receiver.queue.empty()

        wait_until(arrived, timeout=30, interval=0.25)

        # Triton exports its own spans in batches, seconds later: wait for one InferRequest per call it got
        def triton_arrived() -> bool:
            calls, served = stack.store.query(
                "SELECT count(*) FILTER (WHERE name = 'POST triton /v2/models/clf/infer'), "
                "count(*) FILTER (WHERE name = 'InferRequest') FROM spans WHERE start_ns >= ?", [since])[0]
            return served >= calls and stack.receiver.queue.empty()

        if not wait_until(triton_arrived, timeout=60, interval=0.5):
            print(f"matrix: {s.name}: not every call to Triton has its Triton spans after 60 s", file=sys.stderr)
    folder = out / s.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tmp = folder / "traces.otlp.jsonl"
    n_spans = write_traces(stack.store, tmp, since_ns=since)
    _gz(folder / "traces.otlp.jsonl.gz", tmp.read_bytes())
    tmp.unlink()
    _gz(folder / "metrics.prom.gz", scraper.text().encode())
    shutil.copyfile(stack.mdir / "config.pbtxt", folder / "config.pbtxt")
    (folder / "triage.toml").write_text(TOML)
    summary = res.summary()
    measured = {"client": summary, "spans": n_spans, "seconds": round(time.monotonic() - t_begin, 1)}
    measured["triton"] = _triton_figures(scraper)
    expect = s.expect or "(none at warning or above)"
    load = (f"{rate:g} req/s" if not rate_end else f"{rate:g} → {rate_end:g} req/s") + f" for {load_s:g} s"
    (folder / "README.md").write_text(f"""# Matrix capture: {s.name}

**What was done:** {s.what}. Poisson arrivals, {load}, through the demo gateway (OpenTelemetry SDK) to a real
Triton (nvidia-pytriton's `tritonserver`, Python backend, the demo ONNX model; `config.pbtxt` here is the one
it ran). Recorded by `python -m benchmarks.capture_matrix --only {s.name}`.

**Expected first finding:** `{expect}`

**Why (physics, not triage's output):** {s.why}

**Measured (load generator, client side):** {summary['requests']} requests, {summary['ok']} ok,
{summary['errors']} errors, {summary['timeouts']} timeouts; p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms,
p99 {summary['p99_ms']} ms, {summary['throughput_rps']} req/s.
**Triton counters over the capture:** {json.dumps(measured['triton'])}

Files: `traces.otlp.jsonl.gz` (gateway and Triton spans, OTLP JSON lines), `metrics.prom.gz` (Triton's
`/metrics` every second, with timestamps), `config.pbtxt`, `triage.toml` (SLO p95 100 ms).
""")
    (folder / "scenario.json").write_text(json.dumps({"name": s.name, "expect": s.expect, "what": s.what,
                                                      "why": s.why, "measured": measured}, indent=1) + "\n")
    return measured


def _triton_figures(scraper: Scraper) -> dict:
    """Mean queue and compute per request over the capture, from Triton's cumulative counters."""
    series = {}
    for fam in ("nv_inference_request_success", "nv_inference_queue_duration_us",
                "nv_inference_compute_infer_duration_us", "nv_inference_exec_count", "nv_inference_count"):
        vals = [float(l.split()[-2]) for l in scraper.samples.get(fam, []) if 'model="clf"' in l]
        series[fam] = (vals[-1] - vals[0]) if len(vals) >= 2 else 0.0
    n = series["nv_inference_request_success"] or 1.0
    execs = series["nv_inference_exec_count"] or 1.0
    return {"requests": int(series["nv_inference_request_success"]),
            "queue_ms_mean": round(series["nv_inference_queue_duration_us"] / n / 1000, 2),
            "compute_ms_mean": round(series["nv_inference_compute_infer_duration_us"] / n / 1000, 2),
            "avg_batch": round(series["nv_inference_count"] / execs, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.capture_matrix", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="record only these scenarios")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"where capture folders go (default {DEFAULT_OUT})")
    ap.add_argument("--load-seconds", type=float, default=12.0, help="load per scenario (default 12)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    all_ = scenarios()
    if args.list:
        for s in all_:
            print(f"{s.name:22} expect {s.expect or '-':20} {s.what}")
        return 0
    chosen = all_
    if args.only:
        unknown = set(args.only) - {s.name for s in all_}
        if unknown:
            print(f"unknown scenario(s): {', '.join(sorted(unknown))}; --list shows them", file=sys.stderr)
            return 2
        chosen = [s for s in all_ if s.name in args.only]
    from triage.lab.procs import exit_on_signals
    from triage.lab.triton_server import available

    why = available()
    if why:
        print(f"matrix: a real Triton is needed: {why}", file=sys.stderr)
        return 2
    exit_on_signals()  # SIGTERM/SIGHUP → SystemExit, so the finally below stops everything (Ctrl-C likewise)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="triage-matrix-") as work:
        stack = Stack(Path(work))
        try:
            stack.start()
            for s in chosen:
                m = record(stack, s, out, args.load_seconds)
                c, t = m["client"], m["triton"]
                print(f"matrix: {s.name}: {c['ok']}/{c['requests']} ok, p95 {c['p95_ms']} ms, queue mean "
                      f"{t['queue_ms_mean']} ms, batch {t['avg_batch']}, {m['seconds']} s", file=sys.stderr)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
