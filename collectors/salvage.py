"""Recover the good part of a truncated JSON document: cut after the last complete value and close
every bracket still open. Used only on damaged single-document files (JSON lines lose just a line)."""
from __future__ import annotations

import orjson

from . import streams
from .problems import Problems

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


def read_document(src: streams.Source, problems: Problems, kept: str = "records"):
    """The source's whole content as one JSON document; a damaged one is salvaged up to the damage (a
    problem says so, naming what was ``kept``). None when nothing is recoverable."""
    data = streams.read_all(src, text=True)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        doc = salvage(data)
        problems.add(src.name, f"offset {getattr(exc, 'pos', '?')}",
                     f"invalid JSON ({exc}); " + (f"loaded the {kept} before the damage" if doc is not None
                                                  else "nothing recoverable"))
        return doc


def document_of(src: streams.Source, problems: Problems, fits, layout: str):
    """The whole JSON document of ``src`` (salvaged when damaged) when ``fits(doc)``; else None, with the
    problem ``layout`` saying what the document is not. What the whole-document readers share."""
    doc = read_document(src, problems)
    if doc is None:
        return None
    if not fits(doc):
        problems.add(src.name, "offset 0", layout)
        return None
    return doc


def document_reader(fits, layout: str, parse):
    """The ``read`` of a whole-document span format: ``parse(doc, sink)`` on the document when ``fits(doc)``."""
    def read(src: streams.Source, sink, pool=None, progress=None) -> int:
        doc = document_of(src, sink.problems, fits, layout)
        if doc is not None:
            parse(doc, sink)
        return 0
    return read
