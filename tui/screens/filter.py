"""Filter: one line for a filter expression (analyzers/requests.py documents the language); an expression
that does not compile shows its error under the input, naming the offending token, and the dialog stays."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from triage.analyzers.requests import Filter, FilterError, compile_filter

from ..format import esc

HINT = ("route~classify  duration>100ms  stage.queue>20ms  status=error  attr.model.version=3\n"
        "fields: route service model instance trace status duration input calls stage.NAME attr.KEY · "
        "ops: = != ~ !~ > >= < <= · empty: no filter")


class FilterScreen(ModalScreen[Filter | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str = "") -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box"):
            yield Static("[b]Filter requests[/]", id="filter-title")
            yield Input(value=self.current, placeholder="e.g. route~classify duration>100ms", id="filter-input")
            yield Static("", id="filter-error")
            yield Static(f"[dim]{esc(HINT)}[/]", id="filter-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            flt = compile_filter(event.value)
        except FilterError as exc:
            self.query_one("#filter-error", Static).update(
                f"[red]{esc(exc.reason)}: [b]{esc(exc.token)}[/] (column {exc.pos + 1})[/]")
            return
        self.dismiss(flt)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#filter-error", Static).update("")

    def action_cancel(self) -> None:
        self.dismiss(None)
