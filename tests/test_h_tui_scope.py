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
