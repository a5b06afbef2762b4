"""Markdown of untrusted text: route names, file names, span attributes and the summaries built from them
come from whoever sent the telemetry. ``md`` is the one place they are made inert before a Markdown
rendering shows them (report, compare, demo): no line breaks (a new line could start a heading or a table
row), no table cell separators, no code spans, links, images, HTML, emphasis or headings."""
from __future__ import annotations

import re

# the ASCII punctuation that Markdown (CommonMark + GFM tables) gives a meaning to in running
# text; a backslash before it makes it literal
_ACTIVE = re.compile(r"([\\`*\[\]<>|#~&!]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")  # _ inside a word is literal
# line breaks and other control characters, and the bidirectional overrides that reorder what is shown
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def md(value) -> str:
    """``value`` as literal Markdown text on one line, safe in a table cell, a list item or a heading."""
    text = _BREAKS.sub(" ", str(value))
    return _ACTIVE.sub(r"\\\1", text)
