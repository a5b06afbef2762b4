"""Requests: every request of the window, its stage breakdown as columns, slowest first.

Virtualised: the table holds a window of ``PAGE`` rows fetched from DuckDB (ORDER BY ... LIMIT/OFFSET in a
worker of the app, asked for with a FetchRequests message); moving near either edge of the window fetches the
neighbouring one, so a million requests scroll with a few hundred rows in the widget. The app hands down the
filter in force (``filter``) and each page (``show_page``).
"""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from triage.analyzers.requests import COLUMN_NAMES, Filter

from ..format import esc
from ..messages import ExportRequests, FetchRequests, OpenTrace, RequestsPage

PAGE = 100
MARGIN = 20   # rows from the window's edge at which the neighbouring window is fetched
LABELS = {"start": "start s", "e2e_ms": "e2e ms", "pre": "pre", "queue": "queue", "infer": "infer", "post": "post",
          "net": "net", "req": "req", "other": "other", "calls": "calls", "input": "input", "trace_id": "trace"}
NUMERIC = ("e2e_ms", "pre", "queue", "infer", "post", "net", "req", "other")


class RequestsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open trace"),
        Binding("s", "sort(1)", "Sort by next column"),
        Binding("S", "flip", "Reverse sort"),
        Binding("y", "copy", "Copy trace id"),
        Binding("e", "export", "Export CSV"),
        Binding("escape", "app.back", "Back"),
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
    ]

    def __init__(self, flt: Filter, live: bool = False) -> None:
        super().__init__()
        self.filter = flt     # the app's filter in force (set_filter hands down a new one)
        self.live = live      # live mode: the window moves between two looks
        self.sort, self.descending = "e2e_ms", True
        self.first, self.total, self.rows = 0, 0, []
        self.origin: int | None = None
        self.generation = 0
        self._filter_seen: Filter | None = None  # the filter of the last reload
        self.fetching = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Loading requests…", id="requests-summary")
        yield DataTable(id="requests", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#requests", DataTable).add_columns(*[LABELS.get(c, c) for c in COLUMN_NAMES])
        self.reload()

    def on_screen_resume(self) -> None:
        # live: the window moved since the table was last shown
        if self.is_mounted and self.generation and (self.live or self._filter_seen is not self.filter):
            self.reload()

    def reload(self, cursor: int = 0) -> None:
        """Refetch from the top (a new sort or filter, or new data)."""
        self.generation += 1
        self._filter_seen = self.filter
        self.fetch(max(0, cursor - PAGE // 2), cursor)

    def fetch(self, offset: int, cursor: int) -> None:
        self.post_message(FetchRequests(self.generation, offset, PAGE, cursor, self.filter, self.sort, self.descending))

    def show_page(self, msg: RequestsPage) -> None:
        self.fetching = False
        if msg.generation != self.generation:
            return  # a newer sort or filter superseded it
        if msg.error:
            self.query_one("#requests-summary", Static).update(f"[red]{esc(msg.error)}[/]")
            return
        self.first, self.total, self.rows, self.origin = msg.offset, msg.total, msg.rows, msg.origin
        table = self.query_one("#requests", DataTable)
        table.clear()
        for i, r in enumerate(msg.rows):
            table.add_row(*self._cells(r), key=str(msg.offset + i))
        if msg.rows:
            table.move_cursor(row=max(0, min(len(msg.rows) - 1, msg.cursor - msg.offset)), animate=False)
        self._summary()

    def _cells(self, r: dict) -> list:
        from rich.text import Text

        def ms(ns):
            return Text(f"{ns / 1e6:.1f}" if ns else "-", justify="right")

        start = f"{(r['start_ns'] - self.origin) / 1e9:.3f}" if self.origin is not None and r["start_ns"] else "-"
        status = Text("error", style="bold red") if r["error"] else Text("ok")
        return [Text(start, justify="right"), esc(r["route"]), status, ms(r["duration_ns"]),
                *(ms(r[c]) for c in ("pre", "queue", "infer", "post", "net", "req", "other")),
                Text(str(r["calls"]), justify="right"), esc(r["model"] or "-"),
                Text("-" if r["input_size"] is None else str(r["input_size"]), justify="right"), r["trace_id"]]

    def _summary(self) -> None:
        table = self.query_one("#requests", DataTable)
        at = self.first + table.cursor_row + 1 if self.rows else 0
        flt = f" · filter [b]{esc(self.filter.text)}[/]" if self.filter else ""
        arrow = "↓" if self.descending else "↑"
        self.query_one("#requests-summary", Static).update(
            f"[b]{self.total:,}[/] requests{flt} · sorted by [b]{LABELS.get(self.sort, self.sort)} {arrow}[/] · "
            f"row {at:,}/{self.total:,}  [dim](s/S sort, / filter, Enter trace)[/]")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = self.query_one("#requests", DataTable)
        if not self.rows or self.fetching or event.cursor_row != table.cursor_row:
            return  # stale: posted while the window was being replaced
        row = event.cursor_row
        absolute = self.first + row
        near_end = row >= len(self.rows) - MARGIN and self.first + len(self.rows) < self.total
        near_start = row < MARGIN and self.first > 0
        if near_end or near_start:
            self.fetching = True
            self.fetch(max(0, absolute - PAGE // 2), absolute)
        self._summary()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()  # Enter on the table (the DataTable takes the key before the screen)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        name = COLUMN_NAMES[event.column_index]
        self.descending = not self.descending if name == self.sort else name in NUMERIC or name == "start"
        self.sort = name
        self.reload()

    def selected(self) -> dict | None:
        row = self.query_one("#requests", DataTable).cursor_row
        return self.rows[row] if 0 <= row < len(self.rows) else None

    def action_cursor(self, step: int) -> None:
        table = self.query_one("#requests", DataTable)
        table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + step)))

    def action_sort(self, step: int) -> None:
        i = (COLUMN_NAMES.index(self.sort) + step) % len(COLUMN_NAMES)
        self.sort = COLUMN_NAMES[i]
        self.descending = self.sort in NUMERIC or self.sort in ("calls", "input")
        self.reload()

    def action_flip(self) -> None:
        self.descending = not self.descending
        self.reload()

    def action_open(self) -> None:
        r = self.selected()
        if r is not None:
            self.post_message(OpenTrace(r["trace_id"]))

    def action_copy(self) -> None:
        r = self.selected()
        if r is None:
            return
        text = (f"trace {r['trace_id']} root {r['root_id']} · {r['route']} · "
                f"{'error' if r['error'] else 'ok'} · {r['duration_ns'] / 1e6:.1f} ms")
        self.app.copy_to_clipboard(r["trace_id"])
        self.notify(f"Copied trace id ({text})", timeout=4)

    def action_export(self) -> None:
        self.post_message(ExportRequests(self.filter, self.sort, self.descending))
