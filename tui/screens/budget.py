"""Budget and scorecard: each route's stages against their latency budget (with headroom), and every
candidate fix across the findings, ranked by the weighted scorecard (the smallest safe change first)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ..format import esc


class BudgetScreen(Screen):
    BINDINGS = [Binding("e", "export", "Export CSV", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.report: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="budget-scroll"):
            yield Static("", id="budget-title")
            yield DataTable(id="budget", cursor_type="row", zebra_stripes=True)
            yield Static("[b]Scorecard[/] — candidate fixes, best first (weights from \\[scorecard] in triage.toml)",
                         id="scorecard-title")
            yield DataTable(id="scorecard", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#budget", DataTable).add_columns("route", "stage", "budget ms", "p95 ms", "headroom ms")
        self.query_one("#scorecard", DataTable).add_columns("score", "fix", "impact", "feas.", "risk", "for")
        if self.report:
            self._fill()

    def show(self, report: dict) -> None:
        self.report = report
        if self.is_mounted:
            self._fill()

    def _fixes(self) -> list[tuple[dict, str]]:
        """Every candidate fix of the warning-and-above findings, once (its best score), best first."""
        best: dict[str, tuple[dict, str]] = {}
        for f in self.report["findings"]:
            if f["severity"] == "info":
                continue
            for fix in f["remediations"]:
                if fix["id"] not in best or fix["score"] > best[fix["id"]][0]["score"]:
                    best[fix["id"]] = (fix, f["rule"])
        return sorted(best.values(), key=lambda x: -x[0]["score"])

    def action_export(self) -> None:
        """The budget table and the scorecard, each to a new CSV file."""
        import csv
        import io

        from ..export import write_new

        if self.report is None:
            return
        written = []
        budget = self.report.get("budget") or {}
        if budget:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["route", "stage", "budget_ms", "p95_ms", "headroom_ms", "over"])
            for route, rows in budget.items():
                for stage, r in rows.items():
                    w.writerow([route, stage, r["budget_ms"], r["p95_ms"], r["headroom_ms"], r["over"]])
            written.append(write_new("budget", ".csv", buf.getvalue()))
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["score", "fix", "impact", "feasibility", "risk", "for"])
        for fix, rule in self._fixes():
            w.writerow([fix["score"], fix["title"], fix["impact"], fix["feasibility"], fix["risk"], rule])
        written.append(write_new("scorecard", ".csv", buf.getvalue()))
        self.notify("Wrote " + " and ".join(str(p) for p in written), timeout=6)

    def _fill(self) -> None:
        rep = self.report
        budget = self.query_one("#budget", DataTable)
        budget.clear()
        title = self.query_one("#budget-title", Static)
        if rep.get("budget"):
            title.update("[b]Latency budget[/] — p95 per stage against \\[budget] in triage.toml")
            for route, rows in rep["budget"].items():
                for stage, r in rows.items():
                    head = f"[red]{r['headroom_ms']:+.1f}[/]" if r["over"] else f"[green]{r['headroom_ms']:+.1f}[/]"
                    budget.add_row(esc(route), stage, f"{r['budget_ms']:.0f}", f"{r['p95_ms']:.1f}", head)
            budget.display = True
        else:
            title.update("[b]Latency budget[/] — none: add a \\[budget] section to triage.toml "
                         "(see triage.example.toml)")
            budget.display = False
        card = self.query_one("#scorecard", DataTable)
        card.clear()
        for fix, rule in self._fixes():
            card.add_row(f"{fix['score']:.1f}", esc(fix["title"]), str(fix["impact"]), str(fix["feasibility"]),
                         str(fix["risk"]), rule)
