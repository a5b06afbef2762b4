"""Walk capture paths, detect each file's format by content, read it into the store.

One progress callback ``progress(done_bytes, total_bytes, path)`` serves the TUI's bar and the CLI.
Files are streamed (JSON lines and Prometheus text in chunks; OTLP JSON lines through Arrow or worker processes);
gzip and zstd are decompressed on the fly. Unknown files are skipped and listed; damaged records are
counted as problems with their file and line/offset; nothing raises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from . import backends, checks, detect, jaeger_json, otlp_json, otlp_proto, prom_api, prom_text, streams, zipkin_json
from .parallel import Pool
from .problems import Problems
from .salvage import salvage
from .small_files import SMALL_FILE_BYTES, SmallFiles
from .spans import SpanSink
from .store import Store
from .walk import display
from .walk import walk as safe_walk

Progress = Callable[[int, int, str], None]
_IGNORED_NAMES = {".DS_Store"}
_IGNORED_SUFFIXES = {".md", ".toml", ".txt", ".py", ".pyc", ".png", ".svg"}


@dataclass
class IngestResult:
    files: int = 0
    spans: int = 0
    samples: int = 0
    skipped: list[dict] = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)
    paths: list[str] = field(default_factory=list)
    reloaded: list[dict] = field(default_factory=list)  # inputs whose earlier load (--db) was interrupted
    backends: list[dict] = field(default_factory=list)  # per trace backend read: exact/sampled figures (backends/)


def walk(paths: list[str | Path]) -> tuple[list[Path], list[dict]]:
    """Regular files under the given paths (recursively, sorted), and the entries skipped, with the reason
    (``collectors.walk``: missing, unreadable, symlink loops, pseudo file systems, not regular files)."""
    files, _, skipped = safe_walk(paths)
    return files, skipped


def ingest_paths(store: Store, paths: list[str | Path], progress: Progress | None = None,
                 workers: int | None = None) -> IngestResult:
    sources = [p for p in paths if isinstance(p, backends.Source)]  # trace backends' URLs (collectors/backends)
    files, sizes, skipped = safe_walk([p for p in paths if not isinstance(p, backends.Source)])
    result = IngestResult(skipped=list(skipped))
    for source in sources:
        result.backends.append(backends.ingest(store, source, result.problems))
    total = sum(sizes.values()) or 1
    done = 0
    small = SmallFiles(store, result.problems)
    with Pool(workers) as pool:
        for f in files:
            if progress:
                progress(done, total, display(f))
            base = done
            tick = (lambda pos, f=f, base=base: progress(min(base + pos, total), total, display(f))) \
                if progress else None
            ingest_file(store, f, result, pool, tick, small)
            done += sizes[f]
    small.flush()
    if result.files or result.backends:
        checks.capture_checks(store, result.problems)
        store.checkpoint()
    if progress:
        progress(total, total, "")
    return result


def ingest_file(store: Store, path: Path, result: IngestResult, pool: Pool | None = None,
                tick: Callable[[int], None] | None = None, small: SmallFiles | None = None) -> None:
    """Read one file into the store (its ``inputs`` row included). With ``small``, a small OTLP JSON lines
    file is decoded now and loaded with the others at ``small.flush()``."""
    src_name = display(path)
    if path.name in _IGNORED_NAMES or path.suffix.lower() in _IGNORED_SUFFIXES:
        result.skipped.append({"path": src_name, "reason": f"not telemetry ({path.suffix or path.name})"})
        return
    if store.has_input(src_name) or (small is not None and src_name in small.pending):
        result.skipped.append({"path": src_name, "reason": "already in the store (--db)"})
        return
    try:
        src = streams.open_source(path)
    except OSError as exc:
        result.skipped.append({"path": src_name, "reason": f"unreadable: {exc.strerror or exc}"})
        return
    own_pool = pool is None
    pool = pool or Pool(1)
    try:
        try:
            head = streams.peek(src, detect.HEAD_BYTES)
            size = os.fstat(src.raw.fileno()).st_size
        except OSError as exc:  # vanished or changed between the walk and now
            result.skipped.append({"path": src_name, "reason": f"unreadable: {exc.strerror or exc}"})
            return
        fmt, why = detect.detect(head, size)
        if fmt is None:
            reason = why if not src.errors else f"{why}; {src.errors[0]}"
            if src.compression and not head:
                reason = f"empty or damaged {src.compression} file" + (f": {src.errors[0]}" if src.errors else "")
            result.skipped.append({"path": src_name, "reason": reason})
            return
        label = f"{fmt}+{src.compression}" if src.compression else fmt
        data = _small_lines(src, head, size) if small is not None and fmt == detect.OTLP_JSON \
            and not store.was_interrupted(src_name) else None
        before = result.problems.count
        if data is not None:
            for err in src.errors:
                result.problems.add(src_name, f"byte {src.position()}", err)
            spans, samples = small.add(src_name, label, data, result.problems.count - before), 0
        else:
            earlier = store.begin_input(src_name)  # the input's marker; completed below, after its last row
            if earlier:
                result.reloaded.append({**earlier, "reason": "an earlier load into this --db was interrupted; "
                                                              "what it wrote was removed and the file loaded again"})
            spans, samples = _read(store, src, fmt, result.problems, pool,
                                   (lambda: tick(src.position())) if tick else None)
            for err in src.errors:
                result.problems.add(src_name, f"byte {src.position()}", err)
            store.complete_input(src_name, label, spans, samples, result.problems.count - before)
        result.files += 1
        result.spans += spans
        result.samples += samples
        result.paths.append(src_name)
    finally:
        src.close()
        if own_pool:
            pool.close()


def _small_lines(src: streams.Source, head: bytes, size: int) -> bytes | None:
    """The whole decompressed content of a small file of OTLP JSON lines, or None (a large file or a single
    document: the stream is left at its start for the ordinary path)."""
    if src.compression is None and size > SMALL_FILE_BYTES:
        return None
    if src.compression is None and len(head) == size:
        data = head  # the head is the whole file
    else:
        data = streams.read_exact(src, SMALL_FILE_BYTES + 1)
        if len(data) > SMALL_FILE_BYTES:
            streams.rewind(src)
            return None
    try:
        orjson.loads(data.split(b"\n", 1)[0])  # JSON lines (a document spread over lines is read whole)
    except orjson.JSONDecodeError:
        streams.rewind(src)
        return None
    return data


def _read(store: Store, src: streams.Source, fmt: str, problems: Problems, pool: Pool, tick) -> tuple[int, int]:
    name = src.name
    if fmt == detect.TRITON_CONFIG:  # not telemetry, but the batching rules read it
        text = streams.read_all(src, limit=1 << 20).decode("utf-8", errors="replace")
        import re

        m = re.search(r'^\s*name\s*:\s*"([^"]+)"', text, re.M)
        store.execute("INSERT INTO model_configs VALUES (?, ?, ?)",
                      [name, m.group(1) if m else display(src.path.parent.name), text])
        return 0, 0
    if fmt == detect.PROM_TEXT:
        return 0, _read_prom_text(store, src, problems, tick)
    sink = SpanSink(store, name, problems)
    if fmt == detect.OTLP_JSON:
        otlp_json.read(src, sink, pool, tick)
    elif fmt == detect.OTLP_PROTO:
        otlp_proto.read_body(src, sink)
    elif fmt == detect.OTLP_PROTO_FRAMED:
        otlp_proto.read_length_prefixed(src, sink, tick)
    else:
        doc = _load_document(src, problems)
        if doc is None:
            return 0, 0
        if fmt == detect.PROM_API_JSON:
            if not prom_api.is_prom_api(doc):
                problems.add(name, "offset 0", "not a Prometheus API response (no data.resultType)")
                return 0, 0
            return 0, store.insert_samples(*prom_api.parse(doc, name, problems), source=name)
        reader = jaeger_json if fmt == detect.JAEGER_JSON else zipkin_json
        ok = jaeger_json.is_jaeger(doc) if fmt == detect.JAEGER_JSON else zipkin_json.is_zipkin(doc)
        if not ok:
            problems.add(name, "offset 0", f"does not have the {fmt} layout")
            return 0, 0
        reader.parse(doc, sink)
    sink.flush()
    return sink.spans_written, 0


def _load_document(src: streams.Source, problems: Problems):
    data = streams.read_all(src, text=True)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        doc = salvage(data)
        problems.add(src.name, f"offset {getattr(exc, 'pos', '?')}",
                     f"invalid JSON ({exc}); " + ("loaded the records before the damage" if doc is not None
                                                  else "nothing recoverable"))
        return doc


def _read_prom_text(store: Store, src: streams.Source, problems: Problems, tick) -> int:
    default_ts = int(os.fstat(src.raw.fileno()).st_mtime * 1000)
    n = 0
    last, first_line = b"\n", 1
    for chunk, first_line in streams.line_chunks(src):
        cols = prom_text.parse(chunk.decode("utf-8", errors="replace"), src.name, problems, default_ts, first_line)
        n += store.insert_samples(*cols, source=src.name)
        last = chunk
        if tick:
            tick()
    if not last.endswith(b"\n"):  # the exposition format ends every line with a line feed
        lineno = first_line + last.count(b"\n")
        problems.add(src.name, f"line {lineno}",
                     "file ends in the middle of a line (truncated?); its last sample may be cut short")
    return n
