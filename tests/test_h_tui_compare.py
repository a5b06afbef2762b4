"""The compare screen (issue 17): `triage compare A B` in a terminal opens it; `:compare DIR` and `c` reach it
from any screen; what it shows is `triage compare`'s own result (analyzers/compare.py), run in the app's worker."""
import json
import sys

from textual.widgets import DataTable, Input, Static

from conftest import SAMPLES
from triage.cli.main import main
from triage.tui.app import TriageApp
from triage.tui.screens.compare import CompareScreen
from triage.tui.screens.overview import OverviewScreen

BEFORE, AFTER = SAMPLES / "healthy", SAMPLES / "slow-tokenizer"


async def _settle(pilot):
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def _text(screen, wid: str) -> str:
    return str(screen.query_one(wid, Static).render())


async def test_compare_screen_shows_what_triage_compare_prints(capsys):
    assert main(["compare", str(BEFORE), str(AFTER), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    app = TriageApp(paths=[str(AFTER)], source_title="after", compare_before=str(BEFORE))
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, CompareScreen)
        await _settle(pilot)
        screen = app.screen
        assert json.loads(json.dumps(screen.result)) == printed   # the same analysis, not a re-implementation
        route = next(iter(printed["routes"]))
        summary = _text(screen, "#compare-summary")
        assert route in summary and "SLOWER" in summary and "95% CI" in summary
        stages = screen.query_one("#compare-stages", DataTable)
        first = [str(c) for c in stages.get_row_at(0)]
        assert first[0] == "preprocess" and "SLOWER" in first[-1]   # the largest p95 change first
        assert "appeared" in _text(screen, "#compare-findings")
        assert "per-request speed" in _text(screen, "#compare-mix")
        await pilot.press("escape")
        assert isinstance(app.screen, OverviewScreen)
        await pilot.press("c")
        assert app.screen is screen and screen.result is not None


async def test_compare_from_the_command_line_and_its_errors():
    app = TriageApp(paths=[str(AFTER)], source_title="after")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen) and ":compare DIR" in _text(app.screen, "#compare-summary")
        await pilot.press("colon")
        app.screen.query_one(Input).value = ":compare /nonexistent"
        await pilot.press("enter")
        await _settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        assert "Could not compare" in _text(app.screen, "#compare-summary")
        await pilot.press("f", "colon")
        app.screen.query_one(Input).value = f":compare {BEFORE}"
        await pilot.press("enter")
        await _settle(pilot)
        assert isinstance(app.screen, CompareScreen) and app.screen.result is not None
        assert "SLOWER" in _text(app.screen, "#compare-summary")
        await pilot.press("escape")
        assert app.screen is app.findings


def test_cli_opens_the_compare_screen_only_in_a_terminal(monkeypatch, capsys):
    opened = []
    monkeypatch.setattr(TriageApp, "run", lambda self: opened.append((self.paths, self.compare_before)))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["compare", str(BEFORE), str(AFTER)]) == 0
    assert opened == [([str(AFTER)], str(BEFORE))] and capsys.readouterr().out == ""
    assert main(["compare", str(BEFORE), str(AFTER), "--format", "md"]) == 0   # asked for text: text
    assert len(opened) == 1 and capsys.readouterr().out.startswith("## triage compare")
