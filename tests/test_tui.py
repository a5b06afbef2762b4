"""Pilot tests: the app opens a capture, ingests in a worker, shows findings, and is driven by keys alone."""
import pytest
from textual.widgets import DataTable, Static

from conftest import SAMPLES, async_wait_until, model_files
from triage.tui.app import TriageApp
from triage.tui.screens.findings import FindingsScreen
from triage.tui.screens.help import HelpScreen
from triage.tui.screens.overview import OverviewScreen


async def _loaded(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_opens_sample_and_shows_its_findings(size):
    app = TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="sample")
    async with app.run_test(size=size) as pilot:
        await _loaded(pilot)
        assert isinstance(app.screen, OverviewScreen)
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "1,070 requests" in summary and "p95 131.6" in summary
        assert "preprocessing-share" in str(app.screen.query_one("#top-finding", Static).render())
        stages = app.screen.query_one("#stages", DataTable)
        assert stages.row_count >= 5 and stages.get_row_at(0)[0] == "preprocess"

        await pilot.press("f")
        assert isinstance(app.screen, FindingsScreen)
        table = app.screen.query_one("#findings", DataTable)
        assert table.get_row_at(0)[1] == "preprocessing-share"
        detail = str(app.screen.query_one("#detail", Static).render())
        assert "Candidate fixes" in detail and "Exemplar traces" in detail


async def test_keyboard_navigation_and_help():
    app = TriageApp(paths=[str(SAMPLES / "retry-storm")])
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot)
        await pilot.press("f")
        table = app.screen.query_one("#findings", DataTable)
        assert table.get_row_at(0)[1] == "retry-spiral"
        first = str(app.screen.query_one("#detail", Static).render())
        await pilot.press("j")
        assert table.cursor_row == 1
        assert str(app.screen.query_one("#detail", Static).render()) != first
        await pilot.press("k")
        assert table.cursor_row == 0
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Findings" in str(app.screen.query_one("#help-text", Static).render())
        await pilot.press("escape")
        assert isinstance(app.screen, FindingsScreen)
        await pilot.press("o")
        assert isinstance(app.screen, OverviewScreen)
        await pilot.press("right_square_bracket")  # one route: stays put, no error
        assert app.return_code is None  # still running
        await pilot.press("q")
        assert app.return_code == 0  # q asked the app to exit, cleanly (None: it did not)


async def test_unreadable_input_keeps_the_ui_up(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
    app = TriageApp(paths=[str(tmp_path)])
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot)
        assert "No requests found" in str(app.screen.query_one("#summary", Static).render())
        await pilot.press("f")
        table = app.screen.query_one("#findings", DataTable)
        from triage.analyzers.rules import RULES

        assert table.row_count == len(RULES)  # every rule says "not evaluated", at info level
        await pilot.press("i")  # hide info-level findings
        assert table.row_count == 0
        await pilot.press("question_mark")
        await pilot.press("escape")
        assert isinstance(app.screen, FindingsScreen)


async def test_progress_arrives_as_messages_while_the_worker_runs():
    seen = []

    class Spy(TriageApp):
        def on_ingest_progress(self, msg):
            seen.append((msg.done, msg.total))
            super().on_ingest_progress(msg)

    app = Spy(paths=[str(SAMPLES / "overload")])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")  # the UI answers keys while ingest runs in its thread
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await _loaded(pilot)
    assert seen and seen[-1][0] == seen[-1][1] > 0


class CountedRefreshes(TriageApp):
    """Counts the live refreshes armed (``set_timer``) and fired, to see when none is pending."""

    armed = fired = 0

    def set_timer(self, delay, callback=None, **kw):
        if callback != self.live_refresh:
            return super().set_timer(delay, callback, **kw)
        self.armed += 1

        def fire():
            self.fired += 1
            callback()

        return super().set_timer(delay, fire, **kw)

    def refreshes_pending(self) -> bool:
        return self.armed != self.fired or any(w.group == "live" and not w.is_finished for w in self.workers)


async def test_live_mode_refreshes_pauses_and_scrubs():
    from triage.analyzers.constraints import Constraints
    from triage.sessions.live import LiveSession
    from test_live import _emit_queued_requests

    live = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=0).start()
    try:
        app = CountedRefreshes(paths=[], live=live, refresh_s=0.3, source_title="live")
        summary = lambda: str(app.screen.query_one("#summary", Static).render())  # noqa: E731
        async with app.run_test(size=(80, 24)) as pilot:
            _emit_queued_requests(live.otlp_endpoint, n=30)
            await async_wait_until(pilot, lambda: "30 requests" in summary(), 20, "the 30 requests on the overview")
            assert "LIVE" in summary() and "prometheus off" in summary()
            assert app.armed >= 1  # refreshes come from the timer, one after another
            await pilot.press("p")
            assert app.paused
            # the refresh under way (if any) finishes, and arms no other: nothing is left to run while paused
            await async_wait_until(pilot, lambda: not app.refreshes_pending(), 20, "no live refresh pending")
            n, armed = len(live.snapshots), app.armed
            await pilot.press("comma")
            assert "snapshot" in summary()
            assert len(live.snapshots) == n and app.armed == armed  # scrubbing shows old snapshots, runs none
            await pilot.press("p")
            assert not app.paused
            await async_wait_until(pilot, lambda: len(live.snapshots) > n, 20, "a refresh after resuming")
            await pilot.press("q")
        # the session belongs to its caller: `triage demo` still has to stop the gateway, whose last spans go
        # to this receiver (stopped first, the gateway's exporter retried for 10 s on quit)
        assert live.otlp_endpoint is not None
    finally:
        live.stop()


async def test_budget_and_scorecard_screen(tmp_path):
    import shutil

    from triage.tui.screens.budget import BudgetScreen

    cap = tmp_path / "cap"
    shutil.copytree(SAMPLES / "slow-tokenizer", cap)
    (cap / "triage.toml").write_text("[budget]\npreprocess_ms = 20\ninference_ms = 50\ntotal_ms = 300\n")
    app = TriageApp(paths=[str(cap)])
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot)
        await pilot.press("b")
        assert isinstance(app.screen, BudgetScreen)
        budget = app.screen.query_one("#budget", DataTable)
        rows = {budget.get_row_at(i)[1]: budget.get_row_at(i) for i in range(budget.row_count)}
        assert set(rows) == {"preprocess", "inference", "total"} and "-" in str(rows["preprocess"][4])
        card = app.screen.query_one("#scorecard", DataTable)
        scores = [float(card.get_row_at(i)[0]) for i in range(card.row_count)]
        assert scores == sorted(scores, reverse=True) and card.get_row_at(0)[5] == "preprocessing-share"


async def test_one_key_model_fix_preview_apply_and_rollback(tmp_path, demo_repo_master):
    """A finding whose candidates include quantization: a → preview → y → worker → before/after card;
    u rolls back; the model repository ends byte-identical."""
    import shutil

    from triage.tui.screens.remediate import PreviewScreen, ResultScreen

    repo = tmp_path / "repo"
    shutil.copytree(demo_repo_master, repo)
    before = model_files(repo)
    cap = tmp_path / "cap"
    shutil.copytree(SAMPLES / "healthy", cap)
    (cap / "triage.toml").write_text("[budget]\ninference_ms = 5\n")
    app = TriageApp(paths=[str(cap)], model_repo=str(repo))
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot)
        await pilot.press("f")
        table = app.screen.query_one("#findings", DataTable)
        row = next(i for i in range(table.row_count) if table.get_row_at(i)[1] == "budget-overrun")
        table.move_cursor(row=row)
        await pilot.press("a")
        assert isinstance(app.screen, PreviewScreen)
        await pilot.pause()
        assert "new version 2" in str(app.screen.query_one(Static).render())
        await pilot.press("y")
        await async_wait_until(pilot, lambda: isinstance(app.screen, ResultScreen) and app.screen.query(Static),
                               120, "the result card of the quantization")
        card = str(app.screen.query_one(Static).render())
        assert "Applied" in card and "p95 ms" in card and (repo / "clf" / "2" / "model.onnx").exists()
        await pilot.press("escape")
        await pilot.press("u")
        await async_wait_until(pilot, lambda: not (repo / "clf" / "2").exists(), 30, "the rollback of version 2")
    assert model_files(repo) == before


async def test_markup_in_data_is_shown_not_swallowed():
    """Finding text such as 'no [budget] in triage.toml' must appear as written."""
    app = TriageApp(paths=[str(SAMPLES / "healthy")])
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot)
        await pilot.press("f")
        table = app.screen.query_one("#findings", DataTable)
        from rich.text import Text

        shown = [Text.from_markup(str(table.get_cell_at((i, 2)))).plain for i in range(table.row_count)]
        assert any("no [budget] in triage.toml" in c for c in shown), shown
        await pilot.press("b")
        assert "[budget]" in str(app.screen.query_one("#budget-title", Static).render())
