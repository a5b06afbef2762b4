"""Reading files as streams: transparent gzip/zstd decompression, chunked line reads with line numbers,
and a position on the raw file for progress. Nothing here loads a whole file unless asked to."""
from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK_BYTES = 8 << 20
MAX_WHOLE_BYTES = 1 << 30  # a single JSON document larger than this is refused (use JSON lines)


@dataclass
class Source:
    """An opened input: the decompressed stream, the raw file (for progress) and what went wrong reading it."""

    path: Path
    raw: io.BufferedReader
    stream: io.BufferedIOBase
    compression: str | None
    errors: list[str] = field(default_factory=list)

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        for f in (self.stream, self.raw):
            try:
                f.close()
            except Exception:
                pass


def open_source(path: Path) -> Source:
    raw = open(path, "rb")
    magic = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if magic.startswith(GZIP_MAGIC):
        return Source(path, raw, gzip.GzipFile(fileobj=raw, mode="rb"), "gzip")
    if magic.startswith(ZSTD_MAGIC):
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return Source(path, raw, io.BufferedReader(stream, CHUNK_BYTES), "zstd")
    return Source(path, raw, raw, None)


_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError)


def read_some(src: Source, n: int) -> bytes:
    """Read up to n bytes; a damaged compressed stream ends the data and is recorded, not raised."""
    try:
        return src.stream.read(n)
    except _READ_ERRORS as exc:
        src.errors.append(_describe(src, exc))
        return b""
    except Exception as exc:  # zstandard.ZstdError and friends
        src.errors.append(_describe(src, exc))
        return b""


def _describe(src: Source, exc: Exception) -> str:
    what = f"{src.compression} stream" if src.compression else "file"
    return f"{what} damaged or truncated near raw byte {src.position()}: {exc}"


def peek(src: Source, n: int) -> bytes:
    """The first n decompressed bytes, leaving the stream where it was (re-opened under the hood)."""
    head = read_some(src, n)
    src.close()
    fresh = open_source(src.path)
    src.raw, src.stream = fresh.raw, fresh.stream
    src.errors.clear()
    return head


def read_all(src: Source, limit: int = MAX_WHOLE_BYTES) -> bytes:
    parts, total = [], 0
    while True:
        b = read_some(src, CHUNK_BYTES)
        if not b:
            break
        parts.append(b)
        total += len(b)
        if total > limit:
            src.errors.append(f"larger than {limit >> 20} MiB as one document; only JSON lines stream")
            break
    return b"".join(parts)


def line_chunks(src: Source, chunk_bytes: int = CHUNK_BYTES):
    """Yield (chunk, first_line_number): chunks of whole lines of about chunk_bytes each."""
    carry = b""
    lineno = 1
    while True:
        block = read_some(src, chunk_bytes)
        if not block:
            if carry:
                yield carry, lineno
            return
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        chunk, carry = data[:cut + 1], data[cut + 1:]
        yield chunk, lineno
        lineno += chunk.count(b"\n")
