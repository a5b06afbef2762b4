"""Reading files as streams: transparent gzip/zstd decompression, chunked line reads with line numbers,
and a position on the raw file for progress. Nothing here loads a whole file unless asked to."""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK_BYTES = 8 << 20
MAX_WHOLE_BYTES = 1 << 30  # a single JSON document larger than this is refused (use JSON lines)
STEP_BYTES = 8 << 20  # the most one decompression step may produce
MAX_LINE_BYTES = 64 << 20  # a longer line (of JSON lines or Prometheus text) is skipped, as a problem
ZSTD_SLICE = 256  # compressed bytes fed to zstd per step: at 32768:1 (its densest) at most STEP_BYTES out
MAX_DECOMPRESSED_BYTES = 16 << 30  # one compressed file inflates to at most this


@dataclass
class Source:
    """An opened input: the decompressed stream, the raw file (for progress) and what went wrong reading it."""

    path: Path
    raw: io.BufferedReader
    stream: io.BufferedIOBase
    compression: str | None
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The path as valid text (a non-UTF-8 file name with its odd bytes escaped): what is stored."""
        from .walk import display

        return display(self.path)

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


class Decompressed(io.RawIOBase):
    """Incremental decompression (gzip members or zstd frames, back to back) that hands out every byte
    it could decode: a truncated or corrupt stream ends the data and raises only after that.

    The decompression budget: no single step produces more than STEP_BYTES (gzip through ``max_length``;
    zstd is fed ZSTD_SLICE input bytes at a time, which its densest block, RLE at 32768:1, inflates to at most
    STEP_BYTES), so a read of n bytes holds at most n + STEP_BYTES decoded bytes, whatever the ratio; and a
    file inflates to at most MAX_DECOMPRESSED_BYTES, beyond which the rest is not read (a problem says so).
    A 128 KiB zstd bomb of 4 GiB of zeros is thus detected from its first 64 KiB, not inflated."""

    def __init__(self, raw, codec: str):
        self.raw, self.codec = raw, codec
        self._dec = self._new()
        self._buf = bytearray()  # decoded, not yet read: bytes [_pos:] (no copy of the rest per read)
        self._pos = 0
        self._in = memoryview(b"")  # compressed input not yet fed to the decoder
        self._total = 0
        self._done = False
        self._error: Exception | None = None

    def _new(self):
        if self.codec == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def _step(self, want: int) -> bytes:
        """Decode at most ~STEP_BYTES from the pending input (reading more raw bytes when none is left)."""
        if not len(self._in):
            block = self.raw.read(1 << 16)
            if not block:
                if not self._dec.eof:
                    raise EOFError("compressed stream ended before its end marker")
                self._done = True
                return b""
            if self._dec.eof:  # the previous member/frame ended exactly at a block boundary: a new one
                self._dec = self._new()
            self._in = memoryview(block)
        if self.codec == "gzip":
            out = self._dec.decompress(self._in, min(max(want, 1 << 16), STEP_BYTES))
            rest = self._dec.unconsumed_tail
        else:
            out = self._dec.decompress(self._in[:ZSTD_SLICE])
            rest = self._in[ZSTD_SLICE:]
        if self._dec.eof and (self._dec.unused_data or (self.codec != "gzip" and len(rest))):
            rest = self._dec.unused_data + bytes(rest)  # another member/frame follows
            self._dec = self._new()
        self._in = memoryview(rest)
        return out

    def _fill(self, n: int) -> None:
        while len(self._buf) - self._pos < n and not self._done:
            try:
                out = self._step(n - (len(self._buf) - self._pos))
            except Exception as exc:  # zlib.error, zstandard.ZstdError, EOFError
                self._error, self._done = exc, True
                return
            self._total += len(out)
            if self._total > MAX_DECOMPRESSED_BYTES:
                out = out[:len(out) - (self._total - MAX_DECOMPRESSED_BYTES)]
                self._error = ValueError(f"inflates beyond {MAX_DECOMPRESSED_BYTES >> 30} GiB "
                                         f"(MAX_DECOMPRESSED_BYTES); the rest is not read")
                self._done = True
            self._buf += out

    def read(self, n: int = -1) -> bytes:
        self._fill(n if n >= 0 else 1 << 62)
        avail = len(self._buf) - self._pos
        n = avail if n < 0 else min(n, avail)
        with memoryview(self._buf) as view:  # one copy (a bytearray slice would make a second); released
            out = view[self._pos:self._pos + n].tobytes()  # before the buffer below may be resized
        self._pos += n
        if self._pos > (1 << 20) and self._pos * 2 > len(self._buf):  # drop what was read, now and then
            del self._buf[:self._pos]
            self._pos = 0
        if not out and self._error is not None:
            err, self._error = self._error, None
            raise EOFError(str(err))
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_source(path: Path) -> Source:
    raw = open(path, "rb")
    magic = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if magic.startswith(GZIP_MAGIC):
        return Source(path, raw, Decompressed(raw, "gzip"), "gzip")
    if magic.startswith(ZSTD_MAGIC):
        return Source(path, raw, Decompressed(raw, "zstd"), "zstd")
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


def read_exact(src: Source, n: int) -> bytes:
    """n bytes, or fewer where the data ends."""
    parts, got = [], 0
    while got < n:
        part = read_some(src, n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _describe(src: Source, exc: Exception) -> str:
    what = f"{src.compression} stream" if src.compression else "file"
    return f"{what} damaged or truncated near raw byte {src.position()}: {exc}"


def peek(src: Source, n: int) -> bytes:
    """The first n decompressed bytes, leaving the stream where it was (re-opened under the hood)."""
    head = read_some(src, n)
    rewind(src)
    return head


def rewind(src: Source) -> None:
    """Back to the start of the file (re-opened), forgetting what went wrong reading it so far."""
    src.close()
    fresh = open_source(src.path)
    src.raw, src.stream = fresh.raw, fresh.stream
    src.errors.clear()


def read_all(src: Source, limit: int = MAX_WHOLE_BYTES, text: bool = False) -> bytes | bytearray:
    """The whole (decompressed) stream, up to ``limit`` bytes (one buffer: no second copy to join parts).
    ``text``: the data must be text (JSON), so a NUL byte ends it there (a file of zeros after a valid
    start is not read to the end)."""
    out = bytearray()
    while True:
        b = read_some(src, CHUNK_BYTES)
        if not b:
            break
        if text and b"\x00" in b:
            at = b.index(b"\x00")
            src.errors.append(f"NUL byte at decompressed offset {len(out) + at}: not text; read up to it")
            out += b[:at]
            break
        out += b
        if len(out) > limit:
            src.errors.append(f"larger than {limit >> 20} MiB as one document; only JSON lines stream")
            break
    return out


def line_chunks(src: Source, chunk_bytes: int = CHUNK_BYTES):
    """Yield (chunk, first_line_number): chunks of whole lines of about chunk_bytes each."""
    if src.compression is None:
        mapped = _mapped(src)
        if mapped is not None:
            yield from _mapped_chunks(src, mapped, chunk_bytes)
            return
    carry = b""
    lineno = 1
    skipping = False  # inside a line longer than MAX_LINE_BYTES
    while True:
        block = read_some(src, chunk_bytes)
        if not block:
            if carry:
                yield carry, lineno
            return
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            block, skipping, lineno = block[nl + 1:], False, lineno + 1
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > MAX_LINE_BYTES:
                _long_line(src, lineno)
                carry, skipping = b"", True
                continue
            carry = data
            continue
        chunk, carry = data[:cut + 1], data[cut + 1:]
        yield chunk, lineno
        lineno += chunk.count(b"\n")


def _long_line(src: Source, lineno: int) -> None:
    src.errors.append(f"line {lineno} is longer than {MAX_LINE_BYTES >> 20} MiB (MAX_LINE_BYTES): skipped")


def _mapped(src: Source):
    """The plain file memory-mapped (each chunk is then copied once, not three times), or None."""
    import mmap

    try:
        return mmap.mmap(src.raw.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # empty, a pipe, no mmap on this platform
        return None


def _mapped_chunks(src: Source, mm, chunk_bytes: int):
    lineno = 1
    start, size = src.raw.tell(), len(mm)
    try:
        while start < size:
            end = min(start + chunk_bytes, size)
            if end < size:
                cut = mm.rfind(b"\n", start, end)
                if cut < 0:  # a line longer than a chunk: take it whole, up to MAX_LINE_BYTES
                    cut = mm.find(b"\n", end, start + MAX_LINE_BYTES + 1)
                    if cut < 0 and size - start > MAX_LINE_BYTES:
                        _long_line(src, lineno)
                        cut = _find_released(mm, b"\n", start + MAX_LINE_BYTES, size)
                        start, lineno = (size if cut < 0 else cut + 1), lineno + 1
                        src.raw.seek(start)
                        continue
                end = size if cut < 0 else cut + 1
            chunk = mm[start:end]
            _release(mm, start, end)  # the copy is what is used: do not keep the file's pages resident
            src.raw.seek(end)  # progress follows the raw position
            yield chunk, lineno
            lineno += chunk.count(b"\n")
            start = end
    finally:
        mm.close()


def _find_released(mm, sub: bytes, start: int, end: int, window: int = 8 << 20) -> int:
    """mm.find(sub, start, end) in windows whose pages are released once scanned (a scan through a long
    line must not keep the file resident)."""
    while start < end:
        stop = min(start + window, end)
        at = mm.find(sub, start, stop)
        _release(mm, start, stop)
        if at >= 0:
            return at
        start = stop
    return -1


def _release(mm, start: int, end: int) -> None:
    import mmap

    page = mmap.PAGESIZE
    lo = start - start % page
    try:
        mm.madvise(mmap.MADV_DONTNEED, lo, end - lo)
    except (AttributeError, OSError, ValueError):  # no madvise here: the kernel reclaims them in time
        pass
