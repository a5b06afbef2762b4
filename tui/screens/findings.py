"""Findings: the ordered list; the selected finding shows its evidence and candidate fixes."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ..format import badge, esc, fmt_value
from ..messages import OpenTrace, PreviewModelFix, RollBackModelFix


class FindingsScreen(Screen):
    BINDINGS = [
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
        Binding("i", "toggle_info", "Show/hide info"),
        Binding("a", "apply_fix", "Apply model fix"),
        Binding("u", "undo_fix", "Roll back"),
        Binding("enter", "open_exemplar", "Open exemplar trace"),
        Binding("t", "next_exemplar", "Next exemplar"),
        Binding("y", "copy", "Copy finding summary"),
        Binding("e", "export", "Export CSV"),
        Binding("pagedown", "scroll_detail(1)", "Scroll details", show=False),
        Binding("pageup", "scroll_detail(-1)", "Scroll details", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.findings: list[dict] = []
        self.show_info = True
        self.cohort: str | None = None
        self.exemplar = 0  # which exemplar trace of the selected finding Enter opens

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="findings", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="detail-scroll"):
            yield Static("Loading…", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#findings", DataTable).add_columns("severity", "rule", "summary")
        if self.findings:
            self._fill()

    def show(self, report: dict, cohort: str | None = None) -> None:
        """Take the report's findings; rendered now if the screen is mounted, else on mount. ``cohort``: the
        label when the report is of a filtered cohort (F)."""
        self.findings = report["findings"]
        self.cohort = cohort
        self.exemplar = 0
        if self.is_mounted:
            self._fill()

    def _visible(self) -> list[dict]:
        return [f for f in self.findings if self.show_info or f["severity"] != "info"]

    def _fill(self) -> None:
        table = self.query_one("#findings", DataTable)
        table.clear()
        for i, f in enumerate(self._visible()):
            table.add_row(badge(f["severity"]), _short_id(f["rule"]), esc(f["summary"]), key=str(i))
        if not self._visible():
            self.query_one("#detail", Static).update("[green]No findings.[/]")
        else:
            table.move_cursor(row=0)
            self._detail(0)

    def action_cursor(self, step: int) -> None:
        table = self.query_one("#findings", DataTable)
        table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + step)))

    def action_scroll_detail(self, direction: int) -> None:
        scroll = self.query_one("#detail-scroll", VerticalScroll)
        (scroll.scroll_page_down if direction > 0 else scroll.scroll_page_up)()

    def selected(self) -> dict | None:
        vis = self._visible()
        row = self.query_one("#findings", DataTable).cursor_row
        return vis[row] if 0 <= row < len(vis) else None

    def action_apply_fix(self) -> None:
        f = self.selected()
        if f is None or not any(r["id"] == "quantize-int8" for r in f["remediations"]):
            self.notify("The selected finding has no model fix (quantization) among its candidates", timeout=4)
            return
        self.post_message(PreviewModelFix(f))

    def action_undo_fix(self) -> None:
        self.post_message(RollBackModelFix())

    def action_toggle_info(self) -> None:
        self.show_info = not self.show_info
        self._fill()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.exemplar = 0
        self._detail(event.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_exemplar()  # Enter on the table (the DataTable takes the key before the screen)

    def _exemplars(self) -> list[str]:
        f = self.selected()
        return list((f or {}).get("evidence", {}).get("exemplar_trace_ids") or [])

    def action_open_exemplar(self) -> None:
        ex = self._exemplars()
        if not ex:
            self.notify("The selected finding has no exemplar traces", timeout=3)
            return
        self.post_message(OpenTrace(ex[self.exemplar % len(ex)]))

    def action_next_exemplar(self) -> None:
        if self._exemplars():
            self.exemplar = (self.exemplar + 1) % len(self._exemplars())
            self._detail(self.query_one("#findings", DataTable).cursor_row)

    def action_copy(self) -> None:
        f = self.selected()
        if f is None:
            return
        ex = self._exemplars()
        text = f"[{f['severity']}] {f['rule']}: {f['summary']}" + (f" (exemplar traces: {', '.join(ex)})" if ex else "")
        self.app.copy_to_clipboard(text)
        self.notify("Copied the finding's summary", timeout=3)

    def action_export(self) -> None:
        import csv
        import io

        from ..export import write_new

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["severity", "rule", "title", "summary", "confidence", "exemplar_trace_ids", "fixes"])
        for f in self._visible():
            w.writerow([f["severity"], f["rule"], f["title"], f["summary"], f["confidence"],
                        " ".join(f["evidence"].get("exemplar_trace_ids") or []),
                        "; ".join(r["title"] for r in f["remediations"])])
        path = write_new("findings", ".csv", buf.getvalue())
        self.notify(f"Wrote {len(self._visible())} findings to {path}", timeout=6)

    def _detail(self, row: int) -> None:
        vis = self._visible()
        if not 0 <= row < len(vis):
            return
        f = vis[row]
        lines = [f"{badge(f['severity'])} [b]{esc(f['title'])}[/]  [dim]{f['rule']} · confidence {f['confidence']:.0%}[/]",
                 "", esc(f["summary"]), ""]
        if self.cohort:
            lines.insert(0, f"[black on cyan] {esc(self.cohort)} [/]")
        if f["scope"]:
            lines.append("[b]Scope[/] " + ", ".join(f"{esc(k)}: {fmt_value(v)}" for k, v in f["scope"].items()))
        ev = dict(f["evidence"])
        caused = ev.pop("likely_caused_by", None)
        if caused:
            lines.append(f"[yellow]Likely a symptom of [b]{caused['rule']}[/]: {esc(caused['why'])}[/]")
        exemplars = ev.pop("exemplar_trace_ids", None)
        if ev:
            lines.append("[b]Evidence[/]")
            lines += [f"  {esc(k)}: {fmt_value(v)}" for k, v in ev.items()]
        if exemplars:
            lines.append("[b]Exemplar traces[/] [dim](Enter: open the marked one, t: next)[/]")
            lines += [f"  {'▶' if i == self.exemplar % len(exemplars) else ' '} {t}" for i, t in enumerate(exemplars)]
        if f["remediations"]:
            lines += ["", "[b]Candidate fixes[/] (score = weighted impact / feasibility / risk)"]
            for fix in f["remediations"]:
                lines.append(f"  [b]{fix['score']:.1f}[/] {esc(fix['title'])}  [dim]impact {fix['impact']} · "
                             f"feasibility {fix['feasibility']} · risk {fix['risk']}[/]")
                if fix.get("how"):
                    lines.append(f"      [dim]{esc(fix['how'])}[/]")
        self.query_one("#detail", Static).update("\n".join(lines))


RULE_ID_WIDTH = 20  # the longest ids are cut (the detail pane below names the rule in full), so at 80 columns
                    # the summary keeps its room and the table needs no horizontal scrolling


def _short_id(rule: str) -> str:
    return rule if len(rule) <= RULE_ID_WIDTH else rule[:RULE_ID_WIDTH - 1] + "…"
