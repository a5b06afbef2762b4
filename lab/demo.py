"""The whole loop on a real Triton, headless: observe → report → apply the top batching fix → re-measure
the same workload → compare → roll back (unless kept). ``triage demo --incident batch-window --auto-remediate``.

Started on loopback, all stopped on exit: triage's OTLP receiver, a real Triton (nvidia-pytriton's binary,
Python backend running the demo ONNX model) exporting its own OpenTelemetry traces to that receiver, and
the load generator.
"""
from __future__ import annotations

import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import requests

from triage.errors import UsageError

INCIDENTS = {
    # name: Triton's batching window, Poisson rate, gateway tokenize cost per token, input sizes (tokens, weight)
    "batch-window": {"window_us": 50_000, "rate": 10.0, "tokenize_us": 2.0,
                     "sizes": [(16, 1), (32, 1), (64, 1), (128, 1)], "expect": "batching-window"},
    "slow-tokenizer": {"window_us": 0, "rate": 10.0, "tokenize_us": 400.0,
                       "sizes": [(16, 4), (32, 3), (64, 2), (256, 1)], "expect": "preprocessing-share"},
    # a model at ~25 ms per execution (capacity ~40 req/s) under traffic ramping from 5 to 45 req/s
    "overload": {"window_us": 0, "rate": 5.0, "rate_end": 45.0, "tokenize_us": 2.0, "extra_ms": 25.0,
                 "max_batch_size": 1, "sizes": [(16, 1), (32, 1)], "expect": "queueing-growth"},
}


def _triton_counters(metrics_url: str) -> dict[str, float]:
    """Triton's cumulative request, execution and compute-time counters (the first series of each)."""
    from triage.collectors.problems import Problems
    from triage.collectors.readers.prom_text import parse

    _, names, _, values = parse(requests.get(metrics_url, timeout=5).text, metrics_url, Problems(), 0)
    out = {n: None for n in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_compute_infer_duration_us")}
    for name, value in zip(names, values):
        if name in out and out[name] is None:
            out[name] = value
    return {n: v or 0.0 for n, v in out.items()}


def _serve_model(tmp: Path, spec: dict, store, say) -> Path:
    """Train and export the demo model into a Triton repository (tmp/repository) configured for the
    incident, and tell the store its config.pbtxt (the batching rules read it). Returns the model folder."""
    from .model import write_repo
    from .triton_server import write_model_repository

    say("training and exporting the demo model")
    mdir = write_model_repository(tmp / "repository", write_repo(tmp / "demo"), spec["window_us"],
                                  max_batch_size=spec.get("max_batch_size", 16), extra_ms=spec.get("extra_ms", 0.0))
    store.execute("INSERT INTO model_configs VALUES (?, ?, ?)",
                  [str(mdir / "config.pbtxt"), "clf", (mdir / "config.pbtxt").read_text()])
    return mdir


def run(incident: str = "batch-window", keep: bool = False, load_s: float = 20.0, constraints=None,
        progress=None) -> dict:
    """Run the loop; the result also says which server process ran and that it is gone."""
    info: dict = {}
    result = _run(incident, keep, load_s, constraints, progress, info)
    proc = info.get("proc")
    result["stopped"] = {"triton_pid": proc.pid if proc else None,
                         "triton_exited": proc is None or proc.poll() is not None}
    return result


def _run(incident, keep, load_s, constraints, progress, info) -> dict:
    from triage.analyzers import engine
    from triage.analyzers.compare import compare
    from triage.analyzers.constraints import Constraints
    from triage.collectors.receiver import Receiver
    from triage.collectors.store import Store

    from triage.remediations import batching
    from . import loadgen
    from .gateway import Gateway
    from triage.remediations.ledger import LEDGER_NAME
    from .triton_server import Triton

    say = progress or (lambda m: None)
    if incident not in INCIDENTS:
        raise UsageError(f"unknown incident {incident!r} (have: {', '.join(INCIDENTS)})")
    spec = INCIDENTS[incident]
    rate = spec["rate"]
    cons = constraints or Constraints()
    with tempfile.TemporaryDirectory(prefix="triage-demo-") as tmp:
        tmp = Path(tmp)
        store = Store()
        mdir = _serve_model(tmp, spec, store, say)
        with Receiver(store, port=0) as receiver:
            otlp = f"127.0.0.1:{receiver.port}/v1/traces"
            triton = Triton(tmp / "repository", otlp_url=otlp)
            say("starting Triton")
            with triton:
                info["proc"] = triton.proc
                gateway = Gateway(triton.url, f"http://{otlp}", tokenize_us_per_token=spec["tokenize_us"]).start()
                try:
                    workload = loadgen.Workload(rate_rps=rate, rate_end_rps=spec.get("rate_end"), duration_s=load_s,
                                                seed=7, sizes=spec["sizes"], target="gateway")
                    say(f"measuring: {rate:g} req/s for {load_s:g}s through the gateway")
                    c0 = _triton_counters(triton.metrics_url)
                    before = loadgen.run(gateway.url, "clf", workload)
                    c1 = _triton_counters(triton.metrics_url)
                    gateway.provider.force_flush()
                    _wait_for_traces(store, before.ok)
                    engine.prepare(store, cons)
                    findings = engine.run_rules(store, cons)
                    result = {"incident": incident, "expected_rule": spec["expect"], "findings": [f.to_dict() for f in findings if f.severity != "info"],
                              "traces": {"spans": store.scalar("SELECT count(*) FROM spans"),
                                         "requests": store.scalar("SELECT count(*) FROM requests"),
                                         "not_evaluated": {f.rule: f.summary for f in findings if not f.evaluated}},
                              "before": before.summary(), "remediation": None, "after": None, "comparison": None}
                    top = next((f for f in findings if f.severity in ("critical", "warning")), None)
                    if top is None or top.rule != "batching-window":
                        result["remediation"] = {"applied": False, "reason": "the top finding has no batching fix"}
                        return result
                    execs = max(c1["nv_inference_exec_count"] - c0["nv_inference_exec_count"], 1)
                    measured = batching.Measured(
                        arrival_rps=before.sent / before.seconds,
                        avg_batch=(c1["nv_inference_count"] - c0["nv_inference_count"]) / execs,
                        compute_ms=(c1["nv_inference_compute_infer_duration_us"] -
                                    c0["nv_inference_compute_infer_duration_us"]) / execs / 1000,
                        queue_budget_ms=cons.budget.get("queue_ms"))
                    proposal = batching.propose(mdir / "config.pbtxt", measured)
                    say("applying: " + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in proposal.changes.items() if v[0] != v[1]))
                    entry = batching.apply(proposal, reload=triton.load, before=result["before"])
                    after = loadgen.run(gateway.url, "clf", workload)
                    cmp = compare({"clf": before.latencies_ms}, {"clf": after.latencies_ms}, cons)["routes"]["clf"]
                    result["after"] = after.summary()
                    result["comparison"] = {"verdict": cmp["verdict"], "basis": cmp["verdict_basis"], "change": cmp["change"]}
                    result["remediation"] = {"applied": True, "ledger_id": entry["id"], **proposal.to_dict()}
                    if not keep:
                        rolled = batching.rollback(entry["id"], reload=triton.load, ledger_path=mdir / LEDGER_NAME)
                        result["remediation"]["rolled_back"] = rolled["id"]
                        result["remediation"]["config_restored"] = (mdir / "config.pbtxt").read_text() == proposal.old_text
                    else:
                        result["remediation"]["kept_in"] = str(mdir / "config.pbtxt")
                    return result
                finally:
                    gateway.stop()


def _wait_for_traces(store, n: int, timeout_s: float = 15.0) -> None:
    """Triton exports its spans in batches: wait until the requests it served are in the store."""
    from triage.collectors.receiver import wait_until

    def arrived() -> bool:
        triton = store.scalar("SELECT count(*) FROM spans WHERE name = 'InferRequest'") or 0
        gateway = store.scalar("SELECT count(*) FROM spans WHERE name = 'POST /v1/classify'") or 0
        return min(triton, gateway) >= n * 0.98

    wait_until(arrived, timeout=timeout_s, interval=0.25)


@contextmanager
def stack(incident: str, session, load_s: float = 600.0, progress=None):
    """Everything the interactive demo runs, around a live session (sessions.live.LiveSession) whose receiver
    gets the traces: Triton, a Prometheus scraping it (when installed), the gateway, and background load."""
    from . import loadgen
    from .gateway import Gateway
    from .prometheus_server import PrometheusServer, binary
    from .triton_server import Triton

    say = progress or (lambda m: None)
    spec = INCIDENTS[incident]
    with tempfile.TemporaryDirectory(prefix="triage-demo-") as tmp:
        tmp = Path(tmp)
        mdir = _serve_model(tmp, spec, session.store, say)
        endpoint = session.otlp_endpoint.replace("http://", "")
        say("starting Triton")
        triton = Triton(tmp / "repository", otlp_url=endpoint).start()
        prom = gateway = None
        stop = threading.Event()
        loader = None
        try:
            if binary():
                say("starting Prometheus")
                prom = PrometheusServer([f"127.0.0.1:{triton.metrics_port}"], workdir=tmp / "prometheus")
                session.attach_prometheus(prom.url)
            gateway = Gateway(triton.url, session.otlp_endpoint, tokenize_us_per_token=spec["tokenize_us"]).start()
            workload = loadgen.Workload(rate_rps=spec["rate"], rate_end_rps=spec.get("rate_end"), duration_s=load_s,
                                        max_requests=int(load_s * max(spec["rate"], spec.get("rate_end") or 0) * 2),
                                        seed=7, sizes=spec["sizes"], target="gateway")
            loader = threading.Thread(target=loadgen.run, args=(gateway.url, "clf", workload, stop), daemon=True)
            loader.start()
            yield {"triton": triton, "prometheus": prom, "gateway": gateway, "model_dir": mdir}
        finally:
            stop.set()
            if loader:
                loader.join(timeout=15)
            if gateway:
                gateway.stop()
            if prom:
                prom.stop()
            triton.stop()
