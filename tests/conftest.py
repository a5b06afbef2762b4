from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"
CAPTURE = SHARED / "captures" / "triton-gateway-mixed"
SAMPLES = ROOT / "sample_traces"

sys.path.insert(0, str(ROOT))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture not present: {path}")
    return path


@lru_cache(maxsize=None)
def analysis_of(path: str):
    """One analysis per input path for the whole test session (they are read-only)."""
    from analyzers.session import analyze

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
    from remediations.demo_model import write_repo

    root = tmp_path_factory.mktemp("demo")
    write_repo(root)
    return root


def model_files(repo: Path) -> dict[str, str]:
    """Digest of the model files of a repository (the ledger beside them is a record, not a model)."""
    from remediations import atomic, ledger

    return {k: v for k, v in atomic.tree_digest(repo / "clf").items() if not k.endswith(ledger.LEDGER_NAME)}
