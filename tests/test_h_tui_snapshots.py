"""Snapshot tests (pytest-textual-snapshot) of every screen at 80x24 (and the trace at 120x40), on the bundled
samples and the real Triton capture. Deterministic: every worker is waited for,
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


def test_compare_sample(snap_compare):
    """healthy (before) and slow-tokenizer (after): what got slower or faster, by how much, and if it is
    significant, at 80x24."""
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="slow-tokenizer",
                                  compare_before=str(SAMPLES / "healthy")),
                        run_before=_steps(), terminal_size=(80, 24))


# The model fix's preview and result cards take a plan and a result as the quantize fix makes them; these are
# fixed (a real run's paths and timings vary), built with the fix's own Plan and Verdict types and texts.
def _plan():
    from triage.remediations.quantize import EXPECTED, RISK, Plan

    return Plan(source="/models/clf", mode="dynamic", original="/models/clf/1/model.onnx",
                target="/models/clf/2/model.onnx", triton_model_dir="/models/clf", new_version=2,
                calibration="random inputs of the captured input-size mix", shapes=[[1, 64], [4, 128], [16, 512]],
                guardrails={"min_top1_agreement": 0.99}, threads=1,
                what_changes="new version 2 of model 'clf' (dynamic) beside version 1, which stays untouched; Triton "
                             "serves the highest version by default",
                expected_effect=EXPECTED["dynamic"], risk=RISK["dynamic"], input_sizes=[64, 128, 512])


def _push(screen_factory):
    steps = _steps()

    async def run_before(pilot):
        await steps(pilot)
        pilot.app.push_screen(screen_factory())
        await pilot.pause()
    return run_before


def test_fix_preview(snap_compare):
    from triage.tui.screens.remediate import PreviewScreen

    assert snap_compare(TriageApp(paths=[str(SAMPLES / "healthy")], source_title="healthy"),
                        run_before=_push(lambda: PreviewScreen(_plan().to_dict(), {"rule": "budget-overrun"})),
                        terminal_size=(80, 24))


def test_fix_result_applied(snap_compare):
    from triage.remediations.verify import Measurement, Verdict
    from triage.tui.screens.remediate import ResultScreen

    v = Verdict(ok=True, top1_agreement=0.9975, max_abs_diff=0.0123,
                before=Measurement(2.31, 3.02, 3.48, 431.0, 9_436_000, 210.0, 1, [1, 128]),
                after=Measurement(1.12, 1.47, 1.71, 889.0, 2_391_000, 180.0, 1, [1, 128]))
    result = {"plan": _plan().to_dict(), "verification": v.to_dict(), "applied": True,
              "ledger_id": "q-20261201-0f3a9c"}
    assert snap_compare(TriageApp(paths=[str(SAMPLES / "healthy")], source_title="healthy"),
                        run_before=_push(lambda: ResultScreen(result)), terminal_size=(80, 24))
