"""Every key of the TUI, read from the live bindings of the app, its screens and widgets: the help screen
shows this list and a test checks that the README's Keys table matches it, so neither goes out of date."""
from __future__ import annotations

from textual.binding import Binding

NAMES = {"question_mark": "?", "left_square_bracket": "[", "right_square_bracket": "]", "comma": ",",
         "full_stop": ".", "escape": "Esc", "enter": "Enter", "pageup": "PgUp", "pagedown": "PgDn", "up": "↑",
         "down": "↓", "left": "←", "right": "→", "space": "Space", "home": "Home", "end": "End", "slash": "/",
         "colon": ":"}


def display(key: str) -> str:
    return NAMES.get(key, key)


def _where():
    from .app import TriageApp
    from .screens.command import CommandScreen
    from .screens.findings import FindingsScreen
    from .screens.filter import FilterScreen
    from .screens.help import HelpScreen
    from .screens.overview import OverviewScreen
    from .screens.remediate import PreviewScreen, ResultScreen
    from .screens.requests import RequestsScreen
    from .screens.trace import TraceScreen
    from .widgets.waterfall import Waterfall

    return (("everywhere", (TriageApp,)), ("overview", (OverviewScreen,)), ("findings", (FindingsScreen,)),
            ("requests", (RequestsScreen,)), ("trace", (TraceScreen, Waterfall)), ("filter", (FilterScreen,)),
            ("command line", (CommandScreen,)),
            ("fix preview", (PreviewScreen,)), ("fix result", (ResultScreen,)), ("help", (HelpScreen,)))


def keys() -> list[tuple[str, tuple[str, ...], str]]:
    """(where, keys, what) for every action with a description; keys bound to one action are one row."""
    out = []
    for where, classes in _where():
        rows: dict[str, tuple[list[str], str]] = {}
        for cls in classes:
            for b in cls.BINDINGS:
                b = b if isinstance(b, Binding) else Binding(*b)
                keys_, desc = [display(k.strip()) for k in b.key.split(",")], b.description
                if b.action in rows:
                    rows[b.action][0].extend(k for k in keys_ if k not in rows[b.action][0])
                    desc = rows[b.action][1] or desc
                rows[b.action] = (rows.get(b.action, ([], ""))[0] or keys_, desc)
        out += [(where, tuple(ks), desc) for ks, desc in rows.values() if desc]
    return out
