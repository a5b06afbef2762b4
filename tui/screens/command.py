"""The command line (``:``): ``:requests``, ``:findings``, ``:overview``, ``:budget``, ``:trace ID``,
``:filter EXPR`` (empty: no filter), ``:compare DIR`` (that capture before, this one after; alone: the compare
screen), ``:cohort`` (F), ``:help``, ``:quit``. An unknown command or a bad
argument is reported under the input; the line stays open."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from ..format import esc

COMMANDS = ("overview", "findings", "budget", "requests", "trace", "filter", "compare", "cohort", "help", "quit")


def parse_command(line: str) -> tuple[str, str]:
    """(command, argument); a unique prefix names a command (``:req``). ValueError says what is wrong."""
    line = line.strip().lstrip(":").strip()
    if not line:
        raise ValueError("type a command: " + " ".join(COMMANDS))
    word, _, arg = line.partition(" ")
    matches = [c for c in COMMANDS if c.startswith(word.lower())]
    if len(matches) != 1:
        raise ValueError(f"unknown command {word!r} (one of {' '.join(COMMANDS)})" if not matches
                         else f"{word!r} could be {' or '.join(matches)}")
    cmd, arg = matches[0], arg.strip()
    if cmd == "trace" and not arg:
        raise ValueError(":trace needs a trace id")
    if cmd == "filter" and arg:
        from triage.analyzers.requests import FilterError, compile_filter

        try:
            compile_filter(arg)
        except FilterError as exc:
            raise ValueError(f"{exc.reason}: {exc.token} (column {exc.pos + 1 + len('filter ')})") from None
    return cmd, arg


class CommandScreen(ModalScreen[tuple[str, str] | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box"):
            yield Input(placeholder=":requests  :trace ID  :filter EXPR  :compare DIR", id="command-input")
            yield Static("", id="command-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(parse_command(event.value))
        except ValueError as exc:
            self.query_one("#command-error", Static).update(f"[red]{esc(exc)}[/]")

    def action_cancel(self) -> None:
        self.dismiss(None)
