"""Files the TUI writes (an exported trace, a table as CSV): atomic, and never over an existing file."""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path


def write_new(stem: str, suffix: str, text: str, folder: str | Path = ".") -> Path:
    """Write ``text`` to ``folder/stem suffix``, or ``stem-1``, ``stem-2``... when that exists: written to a
    temporary file, fsynced, then hard-linked into place (a link never replaces a file), so a reader never
    sees half a file and nothing is overwritten. Returns the path written."""
    folder = Path(folder)
    stem = re.sub(r"[^\w.\-]", "_", stem)[:120]
    tmp = folder / f".{stem}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(text.encode())
            fh.flush()
            os.fsync(fh.fileno())
        for n in range(10_000):
            path = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            return path
        raise FileExistsError(f"{folder / stem}{suffix}: 10,000 names taken")
    finally:
        tmp.unlink(missing_ok=True)
