"""batching-window on the real Triton capture (window from config.pbtxt, or inferred without it), and
where it must stay quiet. Expected figures are computed from the raw files, not by the rule's code."""
import json
import shutil

import numpy as np
import pytest

from triage.sessions.offline import analyze
from conftest import CAPTURE, SAMPLES, SHARED, analysis_of


def _raw_low_load_queue_ms():
    """Queue (QUEUE_START → child COMPUTE_START) of the requests in the capture's first 30 s (phase 1 of the
    load: ~10 req/s), straight from Triton's OTLP JSON."""
    spans = []
    for f in sorted((CAPTURE / "otlp").glob("*.json")):
        for rs in json.loads(f.read_text())["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                spans += ss["spans"]
    compute = {s["parentSpanId"]: s for s in spans if s["name"] == "compute"}
    t0 = min(int(s["startTimeUnixNano"]) for s in spans)
    out = []
    for s in spans:
        ev = {e["name"]: int(e["timeUnixNano"]) for e in s.get("events", [])}
        if "QUEUE_START" in ev and int(s["startTimeUnixNano"]) - t0 < 25e9:
            c = {e["name"]: int(e["timeUnixNano"]) for e in compute[s["spanId"]]["events"]}
            out.append((c["COMPUTE_START"] - ev["QUEUE_START"]) / 1e6)
    return np.array(out)


def _raw_avg_batch():
    first, last = {}, {}
    for line in (CAPTURE / "metrics.prom").read_text().splitlines():
        for name in ("nv_inference_count", "nv_inference_exec_count"):
            if line.startswith(name + "{"):
                v = float(line.split()[-2])
                first.setdefault(name, v)
                last[name] = v
    return (last["nv_inference_count"] - first["nv_inference_count"]) / (
        last["nv_inference_exec_count"] - first["nv_inference_exec_count"])


def _finding(report, rule="batching-window"):
    return next((f for f in report["findings"] if f["rule"] == rule and f["severity"] != "info"), None)


def test_fires_on_the_real_capture_with_the_configured_window():
    f = _finding(analysis_of(str(CAPTURE)).report())
    assert f is not None and f["severity"] == "warning"
    ev = f["evidence"]
    assert ev["window_ms"] == 10.0 and "config.pbtxt" in ev["window_source"] and ev["max_batch_size"] == 16
    raw = _raw_low_load_queue_ms()
    assert ev["low_load_queue_ms"]["p50"] == pytest.approx(float(np.median(raw)), abs=0.05)
    assert 10.0 < ev["low_load_queue_ms"]["p50"] < 10.5
    assert ev["avg_batch_size"] == pytest.approx(_raw_avg_batch(), abs=0.005)
    assert f["remediations"][0]["id"] == "lower-batch-window"


def test_window_is_inferred_when_the_config_is_absent(tmp_path):
    cap = tmp_path / "capture"
    shutil.copytree(CAPTURE, cap)
    (cap / "config.pbtxt").unlink()
    f = _finding(analyze([cap]).report())
    assert f is not None and f["evidence"]["window_source"].startswith("inferred")
    assert f["evidence"]["window_ms"] == pytest.approx(10.25, abs=0.3)


def test_quiet_when_the_window_is_not_what_requests_wait_for(tmp_path):
    """Same traffic, but a config whose window (100 ms) is far from the observed 10 ms queue: not this rule."""
    cap = tmp_path / "capture"
    shutil.copytree(CAPTURE, cap)
    cfg = cap / "config.pbtxt"
    text = cfg.read_text()
    assert text.count("max_queue_delay_microseconds: 10000") == 1
    cfg.write_text(text.replace("max_queue_delay_microseconds: 10000", "max_queue_delay_microseconds: 100000"))
    assert _finding(analyze([cap]).report()) is None


@pytest.mark.parametrize("sample", ["gpu-idle", "overload", "slow-tokenizer", "retry-storm"])
def test_quiet_on_contention_queueing_and_other_causes(sample):
    """Queueing from contention is spread out (exponential-like), not a plateau: no window to blame."""
    assert _finding(analysis_of(str(SAMPLES / sample)).report()) is None


def test_not_evaluated_without_queue_data():
    rep = analysis_of(str(SHARED / "traces" / "otlp_proto_example_trace.json")).report()
    f = next(f for f in rep["findings"] if f["rule"] == "batching-window")
    assert f["severity"] == "info" and f["summary"].startswith("Not evaluated")
