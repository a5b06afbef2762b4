"""What the first bytes of a file look like: the helpers the readers' ``sniff`` functions share. Detection
(``collectors.detect``) reads ``HEAD_BYTES`` of the decompressed content and offers them to every reader."""
from __future__ import annotations

HEAD_BYTES = 64 << 10


def looks_json(head: bytes) -> bool:
    """The head starts (after white space) like a JSON object or array: only JSON readers take it."""
    return head.lstrip()[:1] in (b"{", b"[")


def text_of(head: bytes) -> str | None:
    """The head as text, or None when it is binary (a NUL byte, invalid UTF-8). Its last 4 bytes are left out
    (a multi-byte character may be cut there) unless that is all there is."""
    if b"\x00" in head:
        return None
    try:
        return head[:-4].decode("utf-8") if len(head) > 4 else head.decode("utf-8")
    except UnicodeDecodeError:
        return None


def whole(head: bytes) -> bool:
    """The head is the whole (decompressed) file."""
    return len(head) < HEAD_BYTES
