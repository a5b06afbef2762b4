from __future__ import annotations

import os
import sys
import time
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
# Third-party and recorded fixtures travel with the project (provenance and licences: fixtures/SOURCES.md).
SHARED = ROOT / "tests" / "fixtures"
CAPTURE = SHARED / "captures" / "triton-gateway-mixed"
VLLM_CAPTURE = SHARED / "captures" / "vllm-gateway-mixed"
SAMPLES = ROOT / "sample_traces"

sys.path.insert(0, str(ROOT))

# Property tests: the suite runs derandomised (the same examples every run, so a failure seen once is seen
# again); `HYPOTHESIS_PROFILE=fuzz` runs many random examples for a long local hunt.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=40, print_blob=True)
settings.register_profile("fuzz", derandomize=False, deadline=None, max_examples=2000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(ci_count: int) -> int:
    """max_examples for a property test: its own count in the suite, the profile's in a longer (fuzz) run."""
    return max(ci_count, settings().max_examples)


def need(path: Path) -> Path:
    """A bundled fixture; its absence is a broken checkout, so it fails rather than skips."""
    assert path.exists(), f"bundled fixture missing: {path} (see tests/fixtures/SOURCES.md)"
    return path


def raw_otlp_spans(folder: Path):
    """Every span of a capture's raw OTLP bodies (``otlp/*.pb``, ``ExportTraceServiceRequest`` protobuf), decoded
    with the OpenTelemetry proto package alone: the independent side of a check against triage."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    for f in sorted((need(folder) / "otlp").iterdir()):
        req = ExportTraceServiceRequest()
        req.ParseFromString(f.read_bytes())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                yield from ss.spans


def _deadline(timeout: float, what: str):
    """A check to call between polls: fails naming ``what`` once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
    return check


def wait_until(pred, timeout: float, what: str, interval: float = 0.02):
    """Poll ``pred()`` until it returns something truthy (which is returned), or fail naming ``what``."""
    overdue = _deadline(timeout, what)
    while not (got := pred()):
        overdue()
        time.sleep(interval)
    return got


async def async_wait_until(pilot, pred, timeout: float, what: str, interval: float = 0.05):
    """``wait_until`` for Textual pilot tests: lets the app run between polls."""
    overdue = _deadline(timeout, what)
    while not (got := pred()):
        overdue()
        await pilot.pause(interval)
    return got


def _private(mp: pytest.MonkeyPatch, home: Path) -> None:
    mp.setenv("TRIAGE_HOME", str(home))
    mp.setenv("XDG_STATE_HOME", str(home / "xdg-state"))
    for name in list(os.environ):
        if name.startswith("TRIAGE_PROMETHEUS_"):
            mp.delenv(name)


@pytest.fixture(scope="session", autouse=True)
def _private_session_environment(tmp_path_factory):
    """Session and module fixtures run before the per-test one below: they get a private home too."""
    with pytest.MonkeyPatch.context() as mp:
        _private(mp, tmp_path_factory.mktemp("triage-home-session"))
        yield


@pytest.fixture(autouse=True)
def _private_environment(tmp_path_factory, monkeypatch):
    """No test writes the user's global ledger or state, or sends the user's Prometheus credentials
    (TRIAGE_PROMETHEUS_*); each test starts with an empty ledger of its own."""
    _private(monkeypatch, tmp_path_factory.mktemp("triage-home"))


@lru_cache(maxsize=None)
def analysis_of(path: str):
    """One analysis per input path for the whole test session (they are read-only)."""
    from triage.sessions.offline import analyze

    return analyze([path])


@pytest.fixture(scope="session")
def capture():
    return analysis_of(str(need(CAPTURE)))


def rules_of(report: dict, severities=("critical", "warning")) -> list[str]:
    return [f["rule"] for f in report["findings"] if f["severity"] in severities]


@pytest.fixture(scope="session")
def demo_repo_master(tmp_path_factory):
    """The demo model repository (trained and exported once per session); copy it before changing it."""
    pytest.importorskip("torch", reason="torch is in the test extra (pip install torch==2.13.0)")
    from triage.lab.model import write_repo

    root = tmp_path_factory.mktemp("demo")
    write_repo(root)
    return root


def model_files(repo: Path) -> dict[str, str]:
    """Digest of the model files of a repository (the ledger beside them is a record, not a model)."""
    from triage.remediations import atomic, ledger

    return {k: v for k, v in atomic.tree_digest(repo / "clf").items() if not k.endswith(ledger.LEDGER_NAME)}
