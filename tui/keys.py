"""Every key of the TUI, read from the live bindings of the app, its screens and widgets (the app names
them, ``TriageApp.key_places``): the help screen shows this list and a test checks that the README's Keys table matches it, so neither goes out of date."""
from __future__ import annotations

from textual.binding import Binding

NAMES = {"question_mark": "?", "left_square_bracket": "[", "right_square_bracket": "]", "comma": ",",
         "full_stop": ".", "escape": "Esc", "enter": "Enter", "pageup": "PgUp", "pagedown": "PgDn", "up": "↑",
         "down": "↓", "left": "←", "right": "→", "space": "Space", "home": "Home", "end": "End", "slash": "/",
         "colon": ":"}


def display(key: str) -> str:
    return NAMES.get(key, key)


def keys(places) -> list[tuple[str, tuple[str, ...], str]]:
    """(where, keys, what) for every action with a description; keys bound to one action are one row.
    ``places`` is (where, classes whose BINDINGS apply there) in the order the help lists them: the app
    hands its own (``TriageApp.key_places``), so this module needs no screen."""
    out = []
    for where, classes in places:
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
