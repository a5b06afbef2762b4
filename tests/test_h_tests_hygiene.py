"""The suite's own guarantees: fixtures travel with the project and say where they come from; every test runs
with a private TRIAGE_HOME and without the user's Prometheus credentials; polls fail naming what they waited for."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAPTURE, ROOT, SHARED, VLLM_CAPTURE, wait_until

OUTER = {"TRIAGE_HOME": "/nonexistent/user-home", "XDG_STATE_HOME": "/nonexistent/xdg",
         "TRIAGE_PROMETHEUS_BEARER_TOKEN": "outer-secret", "TRIAGE_PROMETHEUS_PASSWORD_FILE": "/nonexistent/pw"}


def test_fixtures_are_inside_the_project_and_each_is_accounted_for():
    assert SHARED.resolve().is_relative_to(ROOT / "tests") and CAPTURE.is_dir() and VLLM_CAPTURE.is_dir()
    sources = (SHARED / "SOURCES.md").read_text()
    for path in sorted((SHARED / "traces").rglob("*")) + sorted((SHARED / "metrics").rglob("*")):
        if path.is_file():
            assert path.relative_to(SHARED).as_posix() in sources, f"{path.name}: origin not in SOURCES.md"
    for capture in (CAPTURE, VLLM_CAPTURE):
        assert f"captures/{capture.name}/" in sources and (capture / "otlp").is_dir()
    assert (VLLM_CAPTURE / "README.md").exists() and (SHARED / "captures" / "README.md").exists()


def test_no_test_reads_outside_the_project():
    for path in sorted(set((ROOT / "tests").glob("*.py")) - {Path(__file__)}):
        text = path.read_text()
        sibling = "/".join(("..", "shared"))  # the checkout's sibling folder, which a fresh clone does not have
        assert '"shared" / "fixtures"' not in text and sibling not in text, path.name


def test_environment_seen_by_a_test(tmp_path_factory):
    """Run on its own by the test below, with the user's variables set around it."""
    home = Path(os.environ["TRIAGE_HOME"])
    assert home.is_dir() and home.is_relative_to(tmp_path_factory.getbasetemp())
    assert Path(os.environ["XDG_STATE_HOME"]).is_relative_to(home)
    assert [k for k in os.environ if k.startswith("TRIAGE_PROMETHEUS_")] == []


def test_the_users_home_and_credentials_never_reach_a_test(tmp_path):
    env = {**os.environ, **OUTER}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                          str(tmp_path / "inner"), f"{__file__}::test_environment_seen_by_a_test"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


def test_wait_until_returns_the_value_or_names_what_it_waited_for():
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3 and "ready", 5, "three calls", interval=0) == "ready"
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for the moon"):
        wait_until(lambda: False, 0.05, "the moon")


def test_the_bundled_vllm_capture_reads_as_recorded():
    """Its metrics.prom is bundled gzip-compressed: triage reads every sample of it (counted here with gzip and a
    line count), and every span of the protobuf bodies; the README's 242 gateway requests are there."""
    import gzip

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    lines = gzip.decompress((VLLM_CAPTURE / "metrics.prom.gz").read_bytes()).decode().splitlines()
    samples = sum(1 for line in lines if line and not line.startswith("#"))
    raw_spans, roots = 0, 0
    for body in sorted((VLLM_CAPTURE / "otlp").glob("*.pb")):
        req = ExportTraceServiceRequest()
        req.ParseFromString(body.read_bytes())
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        raw_spans += len(spans)
        roots += sum(1 for s in spans if s.name == "POST /v1/generate" and not s.parent_span_id)
    store = Store()
    res = ingest_paths(store, [VLLM_CAPTURE])
    assert (res.spans, res.samples, res.problems.count) == (raw_spans, samples, 0)
    assert roots == 242 and samples > 30_000
    assert store.scalar("SELECT format FROM inputs WHERE path LIKE '%metrics.prom.gz'") == "prometheus-text+gzip"
