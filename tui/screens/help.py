"""Help: every key, read from the live bindings (tui/keys.py) and handed down by the app, so it cannot go out
of date."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", show=False),
                Binding("q", "close", show=False)]

    def __init__(self, rows: list[tuple[str, tuple[str, ...], str]]) -> None:
        super().__init__()
        self.rows = rows  # (where, keys, what), from tui.keys.keys

    def compose(self) -> ComposeResult:
        from rich.text import Text

        text = Text.assemble(("triage — keys", "bold"))
        section = None
        for where, ks, what in self.rows:
            if where != section:
                text.append(f"\n\n{where.capitalize()}", "bold underline")
                section = where
            text.append("\n  ")
            text.append(f"{'  '.join(ks):<12}", "bold")
            text.append(f" {what}")
        with VerticalScroll(id="help-box"):
            yield Static(text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
