"""Recover the good part of a truncated JSON document: cut after the last complete value and close
every bracket still open. Used only on damaged single-document files (JSON lines lose just a line)."""
from __future__ import annotations

import orjson

MAX_SALVAGE_BYTES = 64 << 20


def salvage(data: bytes):
    """The parsed document made of everything before the damage, or None when nothing usable remains."""
    if len(data) > MAX_SALVAGE_BYTES:
        return None
    text = data.decode("utf-8", errors="replace")
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []  # (position after a closing bracket, closers needed there)
    in_str = esc = False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}":
            if not stack:
                break
            stack.pop()
            if stack:
                cuts.append((i + 1, "".join(reversed(stack))))
    for pos, closers in reversed(cuts[-64:]):
        try:
            return orjson.loads(text[:pos] + closers)
        except orjson.JSONDecodeError:
            continue
    return None
