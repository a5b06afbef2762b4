"""Help: every key, on every screen."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("Everywhere", (("o", "Overview: latency over time and where p95 goes"),
                    ("f", "Findings: ordered list with evidence and candidate fixes"),
                    ("b", "Budget: stage p95 against the latency budget; scorecard of fixes"),
                    ("?", "This help"), ("q", "Quit"))),
    ("Overview", (("[ / ]", "Previous / next route"), ("↑ ↓", "Move in the stage table"))),
    ("Findings", (("↑ ↓  j k", "Select a finding (details below)"), ("i", "Show / hide info-level findings"),
                  ("PgUp PgDn", "Scroll the details"),
                  ("a", "Apply the model fix (quantize) of the selected finding: preview, confirm, measure"),
                  ("u", "Roll back the last fix applied in this session"))),
    ("Live mode", (("p", "Pause / resume refreshing"), (",  .", "Scrub to an earlier / later refresh (pauses)"))),
    ("Help", (("Esc  ?  q", "Close"),)),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", show=False),
                Binding("q", "close", show=False)]

    def compose(self) -> ComposeResult:
        lines = ["[b]triage — keys[/]", ""]
        for section, keys in KEYS:
            lines.append(f"[b u]{section}[/]")
            lines += [f"  [b]{k:<10}[/] {what}" for k, what in keys]
            lines.append("")
        with VerticalScroll(id="help-box"):
            yield Static("\n".join(lines), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
