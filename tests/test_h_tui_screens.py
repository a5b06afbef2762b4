"""Pilot tests of the requests, trace, filter and help screens: finding → exemplar → trace → back, the
requests table paged from DuckDB, the filter and its errors, F on the cohort, copy and export."""
import re

from textual.widgets import DataTable, Input, Static

from triage.analyzers import requests as rq
from conftest import ROOT, SAMPLES
from triage.tui.app import TriageApp
from triage.tui.screens.filter import FilterScreen
from triage.tui.screens.findings import FindingsScreen
from triage.tui.screens.help import HelpScreen
from triage.tui.screens.requests import PAGE, RequestsScreen
from triage.tui.screens.trace import TraceScreen
from triage.tui.widgets.waterfall import Waterfall

TRITON = ROOT / "tests" / "fixtures" / "captures" / "triton-gateway-mixed"


async def _settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _lines(wf: Waterfall) -> list[str]:
    return [wf.render_line(y).text for y in range(min(len(wf.rows), wf.size.height))]


async def test_three_keys_from_findings_to_an_exemplar_waterfall_on_the_real_triton_capture():
    app = TriageApp(paths=[str(TRITON)], source_title="triton")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("f")          # 1: findings (the first one carries exemplar traces)
        finding = app.screen.selected()
        exemplar = finding["evidence"]["exemplar_trace_ids"][0]
        await pilot.press("enter")      # 2: its marked exemplar
        await _settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id == exemplar
        wf = app.screen.query_one(Waterfall)
        rows = wf.rows
        by_name = {s.name: s for s in rows}
        # Triton's queue (the model span, QUEUE_START) and compute spans sit under the gateway's spans
        clf, compute = by_name["clf"], by_name["compute"]
        assert compute.parent is clf and clf.queue_ns > 0
        up, s = [], compute
        while s is not None:
            up.append(f"{s.service}:{s.name}")
            s = s.parent
        assert up[-2:] == ["gateway:POST triton /v2/models/clf/infer", "gateway:POST /v1/classify"]
        assert [r.depth for r in rows] == [r.depth for r in app.screen.trace.order()]
        # exclusive times add up to the request's end-to-end time (the requests table's)
        root = rows[0]
        e2e = app.store.scalar("SELECT duration_ns FROM requests WHERE trace_id = ? AND root_id = ?",
                               [exemplar, root.span_id])
        assert sum(r.self_ns for r in rows) == e2e
        # the critical path is marked, in characters (readable without colour)
        text = _lines(wf)
        assert all("●" in line for line, r in zip(text, rows) if r.critical_ns)
        assert sum(r.critical_ns for r in rows) == e2e
        assert "● critical path" in str(app.screen.query_one("#trace-summary", Static).render())
        # span details: events of the compute span
        wf.cursor = rows.index(compute)
        wf.action_move(0)
        await pilot.pause()
        detail = str(app.screen.query_one("#span-detail", Static).render())
        assert "COMPUTE_START" in detail and "stage inference" in detail
        # x: critical path only; fold/unfold
        await pilot.press("x")
        assert all(r.critical_ns for r in wf.rows)
        await pilot.press("x", "home", "space")
        assert len(wf.rows) == 1
        await pilot.press("space")
        assert len(wf.rows) == len(rows)
        await pilot.press("escape")     # back
        assert isinstance(app.screen, FindingsScreen)


async def test_requests_table_sorts_pages_and_opens_traces():
    app = TriageApp(paths=[str(TRITON)], source_title="triton")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("r")
        await _settle(pilot)
        screen = app.screen
        assert isinstance(screen, RequestsScreen)
        table = screen.query_one("#requests", DataTable)
        total = rq.count(app.store)
        assert total == 1949 and table.row_count == PAGE  # a window of the rows, not all of them
        assert "1,949 requests" in str(screen.query_one("#requests-summary", Static).render())
        lat = [r["duration_ns"] for r in screen.rows]
        assert lat == sorted(lat, reverse=True)
        # moving down past the window fetches the next one; the row under the cursor is the right one
        want = rq.page(app.store, None, "e2e_ms", True, 0, total)
        for _ in range(PAGE):
            await pilot.press("down")
        await _settle(pilot)
        assert screen.first > 0 and table.row_count == PAGE
        assert screen.selected()["trace_id"] == want[PAGE]["trace_id"]
        # another sort column, then the reverse
        await pilot.press("s")
        await _settle(pilot)
        assert screen.sort == "pre" and screen.first == 0
        pre = [r["pre"] for r in screen.rows]
        assert pre == sorted(pre, reverse=True)
        await pilot.press("S")
        await _settle(pilot)
        ascending = rq.page(app.store, None, "pre", False, 0, PAGE)
        assert [r["pre"] for r in screen.rows] == sorted(r["pre"] for r in ascending)
        picked = screen.selected()["trace_id"]
        await pilot.press("enter")
        await _settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id == picked
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("escape")     # back to the screen before the requests
        assert app.screen is app.overview


async def test_filter_errors_stay_in_the_dialog_and_a_good_one_scopes_the_table():
    app = TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="sample")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("slash")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"duration>lots", "enter")
        assert isinstance(app.screen, FilterScreen)  # never a crash, never closed on an error
        err = str(app.screen.query_one("#filter-error", Static).render())
        assert "duration>lots" in err and "not a duration" in err
        app.screen.query_one(Input).value = "stage.preprocess>30ms status=ok"
        await pilot.press("enter")
        await _settle(pilot)
        assert isinstance(app.screen, RequestsScreen)
        want = rq.count(app.store, rq.compile_filter("stage.preprocess>30ms status=ok"))
        assert 0 < want < rq.count(app.store)
        assert app.screen.total == want
        assert "filter: stage.preprocess>30ms status=ok" in app.sub_title  # the header shows it
        assert "filter stage.preprocess>30ms" in str(app.screen.query_one("#requests-summary", Static).render())
        # F: the rules on the filtered cohort, labelled as such
        await pilot.press("F")
        await _settle(pilot)
        await pilot.press("o")
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "COHORT stage.preprocess>30ms status=ok" in summary
        assert f"{want:,} requests" in summary
        await pilot.press("f")
        assert "COHORT" in str(app.screen.query_one("#detail", Static).render())
        # Esc cancels the dialog and keeps the filter
        await pilot.press("slash", "escape")
        assert app.filter.text == "stage.preprocess>30ms status=ok"


async def test_copy_and_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copied = []
    app = TriageApp(paths=[str(SAMPLES / "slow-tokenizer")])
    app.copy_to_clipboard = copied.append
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("f", "y")
        assert copied[-1].startswith(f"[{app.screen.selected()['severity']}] preprocessing-share: ")
        await pilot.press("e")
        import csv

        found = list(csv.DictReader((tmp_path / "findings.csv").open()))
        assert [r["rule"] for r in found] == [f["rule"] for f in app.screen.findings]
        await pilot.press("r")
        await _settle(pilot)
        first = app.screen.selected()["trace_id"]
        await pilot.press("y")
        assert copied[-1] == first
        await pilot.press("e")
        await _settle(pilot)
        await pilot.press("e")
        await _settle(pilot)
        csvs = sorted(p.name for p in tmp_path.glob("requests*.csv"))
        assert csvs == ["requests-1.csv", "requests.csv"]  # the second export did not overwrite the first
        lines = (tmp_path / "requests.csv").read_text().splitlines()
        assert len(lines) == 1 + rq.count(app.store) and lines[1].startswith(first)
        await pilot.press("enter")
        await _settle(pilot)
        await pilot.press("e")
        exported = tmp_path / f"trace-{first}.json"
        assert exported.exists()
        from triage.sessions.offline import analyze

        back = analyze([str(exported)])
        assert back.store.scalar("SELECT count(*) FROM spans") == app.store.scalar(
            "SELECT count(*) FROM spans WHERE trace_id = ?", [first])


def _readme_keys():
    text = (ROOT / "README.md").read_text()
    table = re.split(r"\n#", text[text.index("### Keys"):])[0]  # up to the next heading
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((cells[1], tuple(re.findall(r"`([^`]+)`", cells[0])), cells[2]))
    return rows


async def test_help_lists_every_live_binding_and_the_readme_matches_it():
    from triage.tui.keys import keys as rows

    def keys():
        return rows(TriageApp.key_places())

    assert _readme_keys() == keys()
    app = TriageApp(paths=[str(SAMPLES / "healthy")])
    async with app.run_test(size=(100, 60)) as pilot:
        await _settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = str(app.screen.query_one("#help-text", Static).render())
        for where, ks, what in keys():
            assert re.search(re.escape("  ".join(ks)) + r"\s+" + re.escape(what), shown), (where, ks, what)
        # every binding of the app and its screens is in the list
        bound = {(b.key, b.description) for b in TriageApp.BINDINGS if b.description}
        assert all(any(what == d for _, _, what in keys()) for _, d in bound)


def test_command_line_parsing():
    import pytest

    from triage.tui.screens.command import parse_command

    assert parse_command(":requests") == ("requests", "")
    assert parse_command("req") == ("requests", "")
    assert parse_command(":trace  abc ") == ("trace", "abc")
    assert parse_command(":filter duration>1s status=error") == ("filter", "duration>1s status=error")
    assert parse_command(":filter") == ("filter", "")
    for bad, says in ((":", "type a command"), (":frobnicate", "unknown command"), (":f", "could be"),
                      (":trace", "needs a trace id"), (":filter duration>soon", "duration>soon")):
        with pytest.raises(ValueError, match=says):
            parse_command(bad)


async def test_command_line_opens_a_trace_and_sets_a_filter():
    app = TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="sample")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        tid = app.store.query("SELECT trace_id FROM requests ORDER BY duration_ns DESC, trace_id LIMIT 1")[0][0]
        await pilot.press("colon")
        app.screen.query_one(Input).value = "nonsense"
        await pilot.press("enter")
        assert "unknown command" in str(app.screen.query_one("#command-error", Static).render())
        app.screen.query_one(Input).value = f"trace {tid}"
        await pilot.press("enter")
        await _settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace is not None
        assert app.screen.trace.trace_id == tid
        await pilot.press("escape", "colon")
        app.screen.query_one(Input).value = ":filter status=error"
        await pilot.press("enter")
        await _settle(pilot)
        assert isinstance(app.screen, RequestsScreen) and app.filter.text == "status=error"
        assert app.screen.total == rq.count(app.store, rq.compile_filter("status=error"))
        await pilot.press("colon")
        app.screen.query_one(Input).value = ":trace 0000"
        await pilot.press("enter")
        await _settle(pilot)
        assert "No spans of trace 0000" in str(app.screen.query_one("#trace-summary", Static).render())


async def test_a_ten_thousand_span_trace_renders_only_the_rows_on_screen(tmp_path):
    import json

    from triage.analyzers.trace import Span, build, to_otlp

    tid = "ab" * 16
    t0 = 1_796_029_103_000_000_000
    spans = [Span(tid, "%016x" % 1, None, "gw", "POST /big", 2, t0, t0 + 10_000_000)]
    spans += [Span(tid, "%016x" % (i + 2), "%016x" % 1, "gw", f"step {i}", 1, t0 + i * 1000, t0 + i * 1000 + 900)
              for i in range(9_999)]
    cap = tmp_path / "big.json"
    cap.write_text(json.dumps(to_otlp(build(tid, spans))))
    drawn = []
    orig = Waterfall.render_line

    def counting(self, y):
        drawn.append(y)
        return orig(self, y)

    Waterfall.render_line = counting
    try:
        app = TriageApp(paths=[str(cap)])
        async with app.run_test(size=(80, 24)) as pilot:
            await _settle(pilot)
            app.open_trace(tid)
            await _settle(pilot)
            wf = app.screen.query_one(Waterfall)
            assert len(wf.rows) == 10_000
            drawn.clear()
            await pilot.press("pagedown", "pagedown", "end")
            await pilot.pause()
            assert wf.cursor == 9_999 and wf.selected().name == "step 9998"
            assert 0 < len(drawn) <= 4 * wf.size.height  # the rows on screen, not 10,000
            await pilot.press("home", "space")           # fold the root: one row left
            assert len(wf.rows) == 1
    finally:
        Waterfall.render_line = orig


async def test_live_mode_requests_and_traces_read_the_live_store():
    from triage.analyzers.constraints import Constraints
    from triage.sessions.live import LiveSession
    from conftest import async_wait_until
    from test_live import _emit_queued_requests

    live = LiveSession(Constraints(), listen=("127.0.0.1", 0), window_s=600, settle_s=0).start()
    try:
        app = TriageApp(paths=[], live=live, refresh_s=0.3, source_title="live")
        async with app.run_test(size=(80, 24)) as pilot:
            _emit_queued_requests(live.otlp_endpoint, n=12)
            summary = app.overview.query_one("#summary", Static)
            await async_wait_until(pilot, lambda: "12 requests" in str(summary.render()), 20, "12 requests on the overview")
            await pilot.press("r")
            await async_wait_until(pilot, lambda: app.requests.total == 12, 20, "12 rows in the requests table")
            await pilot.press("enter")
            await async_wait_until(pilot, lambda: isinstance(app.screen, TraceScreen) and app.screen.trace is not None,
                                   20, "the trace of the first request")  # from the live session's store
            assert app.screen.trace.trace_id == app.requests.rows[0]["trace_id"]
            await pilot.press("q")
    finally:
        live.stop()


async def test_mouse_selects_and_folds_in_the_waterfall():
    app = TriageApp(paths=[str(SAMPLES / "slow-tokenizer")])
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("r", "enter")
        await _settle(pilot)
        wf = app.screen.query_one(Waterfall)
        n = len(wf.rows)
        assert n > 2
        await pilot.click(Waterfall, offset=(10, 2))
        assert wf.cursor == 2 + int(wf.scroll_offset.y)
        await pilot.click(Waterfall, offset=(0, 0))  # the root's fold marker
        assert len(wf.rows) == 1
        await pilot.click(Waterfall, offset=(0, 0))
        assert len(wf.rows) == n


async def test_empty_capture_requests_and_trace_keep_the_ui_up(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
    app = TriageApp(paths=[str(tmp_path)])
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("r")
        await _settle(pilot)
        assert "0 requests" in str(app.screen.query_one("#requests-summary", Static).render())
        await pilot.press("enter", "y", "s", "S")
        await _settle(pilot)
        assert isinstance(app.screen, RequestsScreen)
        await pilot.press("F")
        await _settle(pilot)
        await pilot.press("colon")
        app.screen.query_one(Input).value = "trace 00ff"
        await pilot.press("enter")
        await _settle(pilot)
        assert "No spans of trace 00ff" in str(app.screen.query_one("#trace-summary", Static).render())
        await pilot.press("x", "space", "e", "escape")
        assert isinstance(app.screen, RequestsScreen)
        assert app.return_code is None
