"""Trace: the waterfall of one trace (critical path marked), and the selected span's details. The app loads the
trace (LoadTrace, posted on mount) and hands it down (``show_trace``, ``show_error``)."""
from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from ..format import esc
from ..messages import LoadTrace
from ..widgets.waterfall import STAGE_COLOURS, Waterfall


class TraceScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("x", "critical", "Critical path only"),
        Binding("y", "copy", "Copy trace id"),
        Binding("e", "export", "Export OTLP JSON"),
    ]

    def __init__(self, trace_id: str) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.trace = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Loading trace {esc(self.trace_id)}…", id="trace-summary")
        yield Waterfall(id="waterfall")
        with VerticalScroll(id="span-scroll"):
            yield Static("", id="span-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.post_message(LoadTrace(self, self.trace_id))

    def show_error(self, error: str) -> None:
        self.query_one("#trace-summary", Static).update(f"[red]{esc(error)}[/]")

    def show_trace(self, tr) -> None:
        self.trace = tr
        if tr is None:
            self.query_one("#trace-summary", Static).update(
                f"[red]No spans of trace {esc(self.trace_id)} in this window[/]")
            return
        ms = (tr.end_ns - tr.start_ns) / 1e6
        key = " ".join(f"[{c}]█[/]{s}" for s, c in STAGE_COLOURS.items() if s)
        self.query_one("#trace-summary", Static).update(
            f"[b]trace {esc(tr.trace_id)}[/] · {len(tr.spans):,} spans · {ms:,.2f} ms · ● critical path\n{key}")
        wf = self.query_one(Waterfall)
        wf.show(tr)
        wf.focus()

    def on_waterfall_selected(self, msg: Waterfall.Selected) -> None:
        s = msg.span
        lines = [f"[b]{esc(s.service)}: {esc(s.name)}[/]  [dim]span {s.span_id} · kind {s.kind}[/]",
                 f"stage [b]{esc(s.stage or '-')}[/] · duration {(s.end_ns - s.start_ns) / 1e6:.3f} ms"
                 + (f" ({(s.e - s.b) / 1e6:.3f} inside its parent)" if (s.e - s.b) != (s.end_ns - s.start_ns) else "")
                 + " · exclusive "
                 f"{s.self_ns / 1e6:.3f} ms" + (f" (queue {s.queue_ns / 1e6:.3f} ms)" if s.queue_ns else "")
                 + (f" · critical path {s.critical_ns / 1e6:.3f} ms" if s.critical_ns else ""),
                 f"status {s.status_code}" + (f" {esc(s.status_message)}" if s.status_message else "")]
        if s.attributes:
            lines += ["[b]Attributes[/]"] + [f"  {esc(k)} = {esc(json.dumps(v) if not isinstance(v, str) else v)}"
                                             for k, v in s.attributes.items()]
        if s.events:
            lines.append("[b]Events[/]")
            lines += [f"  +{(ts - s.start_ns) / 1e6:8.3f} ms  {esc(n)}" + (f" {esc(json.dumps(a))}" if a else "")
                      for n, ts, a in s.events]
        if s.resource:
            lines += ["[b]Resource[/]"] + [f"  {esc(k)} = {esc(v)}" for k, v in s.resource.items()]
        lines.append("[b]Links[/] " + (", ".join(esc(x) for x in s.links) if s.links else "[dim](none recorded)[/]"))
        self.query_one("#span-detail", Static).update("\n".join(lines))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_critical(self) -> None:
        wf = self.query_one(Waterfall)
        wf.toggle_critical()
        self.notify("Critical path only" if wf.critical_only else "All spans", timeout=2)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.trace_id)
        self.notify(f"Copied trace id {self.trace_id}", timeout=3)

    def action_export(self) -> None:
        if self.trace is None:
            return
        from triage.analyzers.trace import to_otlp

        from ..export import write_new

        path = write_new(f"trace-{self.trace_id}", ".json", json.dumps(to_otlp(self.trace), indent=1))
        self.notify(f"Wrote {path}", timeout=6)
