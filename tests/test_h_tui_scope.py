"""The filter scopes the overview (issue 17): with a filter set, the overview's latency figures, plot and stage
table are of the requests it selects, labelled with the expression; cleared, the whole capture again."""
import numpy as np
from textual.widgets import DataTable, Static

from conftest import SAMPLES
from triage.analyzers import requests as rq
from triage.tui.app import TriageApp


async def _settle(pilot):
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def test_a_filter_scopes_the_overview_and_its_stage_table():
    app = TriageApp(paths=[str(SAMPLES / "slow-tokenizer")], source_title="sample")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        whole = app.report["latency"]
        route = next(iter(whole))
        flt = rq.compile_filter("stage.preprocess>30ms status=ok")
        app.set_filter(flt)
        await _settle(pilot)
        await pilot.press("o")
        await pilot.pause()
        rows = rq.page(app.store, flt, limit=rq.count(app.store, flt))
        e2e = np.asarray([r["duration_ns"] for r in rows if r["route"] == route], dtype=float) / 1e6
        pre = np.asarray([r["pre"] or 0 for r in rows if r["route"] == route], dtype=float) / 1e6
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "FILTER stage.preprocess>30ms status=ok" in summary
        assert f"{len(rows):,} of {sum(x['requests'] for x in whole.values()):,} requests" in summary
        assert f"{len(e2e):,} requests" in summary and f"p95 {np.percentile(e2e, 95):.1f}" in summary
        table = app.screen.query_one("#stages", DataTable)
        row = [str(c) for c in table.get_row("preprocess")]
        assert row[3] == f"{np.percentile(pre, 50):.1f}" and row[4] == f"{np.percentile(pre, 95):.1f}"
        await pilot.press("colon")
        app.screen.query_one("Input").value = ":filter"
        await pilot.press("enter")
        await _settle(pilot)
        await pilot.press("o")
        await pilot.pause()
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "FILTER" not in summary and f"{whole[route]['requests']:,} requests" in summary


async def test_e_writes_the_overview_and_budget_tables_as_csv(tmp_path, monkeypatch):
    import csv
    import shutil

    capture = tmp_path / "capture"
    shutil.copytree(SAMPLES / "slow-tokenizer", capture)
    (capture / "triage.toml").write_text('[budget]\npreprocess_ms = 20\ninference_ms = 30\n')
    monkeypatch.chdir(tmp_path)
    app = TriageApp(paths=[str(capture)], source_title="sample")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        app.clear_notifications()
        await pilot.press("e")
        rows = list(csv.DictReader((tmp_path / "overview.csv").open()))
        stages = app.report["stages"]
        assert {(r["route"], r["stage"]) for r in rows} == {(rt, st) for rt, s in stages.items() for st in s}
        r = next(r for r in rows if r["stage"] == "preprocess")
        assert float(r["stage_p95_ms"]) == stages[r["route"]]["preprocess"]["p95_ms"] and r["filter"] == ""
        assert any("overview.csv" in n.message for n in app._notifications)
        app.set_filter(rq.compile_filter("status=ok stage.preprocess>30ms"))
        await _settle(pilot)
        await pilot.press("o", "e")
        scoped = list(csv.DictReader((tmp_path / "overview-1.csv").open()))
        assert {r["filter"] for r in scoped} == {"status=ok stage.preprocess>30ms"}
        assert scoped[0]["requests"] == str(rq.count(app.store, app.filter))
        await pilot.press("b", "e")
        budget = list(csv.DictReader((tmp_path / "budget.csv").open()))
        assert {(r["route"], r["stage"]) for r in budget} == {
            (rt, st) for rt, s in app.report["budget"].items() for st in s}
        card = list(csv.DictReader((tmp_path / "scorecard.csv").open()))
        assert card and card[0]["fix"] and float(card[0]["score"]) >= float(card[-1]["score"])
