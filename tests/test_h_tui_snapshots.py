"""Snapshot tests (pytest-textual-snapshot) of the requests, trace, filter and help screens, at 80x24 (and the
trace at 120x40), on a bundled sample and the real Triton capture. Deterministic: every worker is waited for,
notifications (toasts) are cleared, and nothing shown depends on a clock. Update on purpose with
``pytest tests/test_h_tui_snapshots.py --snapshot-update`` and review the SVGs."""
from pathlib import Path

import pytest
from textual.widgets import Input

from conftest import ROOT
from triage.tui.app import TriageApp

# relative to the checkout (the tests run from ROOT): a finding's evidence names its input files, and a
# snapshot must not depend on where the project was cloned
TRITON = Path("tests") / "fixtures" / "captures" / "triton-gateway-mixed"
SAMPLES = Path("sample_traces")


@pytest.fixture(autouse=True)
def _from_the_checkout(monkeypatch):
    monkeypatch.chdir(ROOT)


def _steps(*keys, typed: str | None = None):
    async def run_before(pilot):
        app = pilot.app
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.clear_notifications()  # before a modal covers the toasts of the screen below
        for k in keys:
            await pilot.press(k)
            await app.workers.wait_for_complete()
            await pilot.pause()
            app.clear_notifications()
        if typed is not None:
            field = app.screen.query_one(Input)
            field.cursor_blink = False
            field.value = typed
            await pilot.press("enter")
            await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()
    return run_before


def test_requests_triton(snap_compare):
    assert snap_compare(TriageApp(paths=[str(TRITON)], source_title="triton-gateway-mixed"),
                        run_before=_steps("r"), terminal_size=(80, 24))


def test_requests_sample_sorted_by_preprocess(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="slow-tokenizer"),
                        run_before=_steps("r", "s"), terminal_size=(80, 24))


def test_trace_triton_exemplar(snap_compare):
    assert snap_compare(TriageApp(paths=[str(TRITON)], source_title="triton-gateway-mixed"),
                        run_before=_steps("f", "enter"), terminal_size=(80, 24))


def test_trace_triton_exemplar_large_critical_path_only(snap_compare):
    assert snap_compare(TriageApp(paths=[str(TRITON)], source_title="triton-gateway-mixed"),
                        run_before=_steps("f", "enter", "down", "down", "down", "down", "x"),
                        terminal_size=(120, 40))


def test_trace_sample_from_requests(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "retry-storm")], source_title="retry-storm"),
                        run_before=_steps("r", "enter"), terminal_size=(80, 24))


def test_filter_error(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="slow-tokenizer"),
                        run_before=_steps("slash", typed="route~classify duration>fast"), terminal_size=(80, 24))


def test_requests_filtered(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="slow-tokenizer"),
                        run_before=_steps("slash", typed="stage.preprocess>30ms status=ok"), terminal_size=(80, 24))


def test_help(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "healthy")], source_title="healthy"),
                        run_before=_steps("question_mark"), terminal_size=(80, 24))


# The screens that were there before issue 17, so that every screen has a snapshot. Their numbers come from
# the rules and stage attribution: a change there shows here (review the SVG, then --snapshot-update).
def test_overview_sample(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="slow-tokenizer"),
                        run_before=_steps(), terminal_size=(80, 24))


def test_findings_triton(snap_compare):
    assert snap_compare(TriageApp(paths=[str(TRITON)], source_title="triton-gateway-mixed"),
                        run_before=_steps("f"), terminal_size=(80, 24))


def test_budget_sample(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "healthy")], source_title="healthy"),
                        run_before=_steps("b"), terminal_size=(80, 24))


def test_command_line(snap_compare):
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "healthy")], source_title="healthy"),
                        run_before=_steps("colon", typed="frobnicate"), terminal_size=(80, 24))
