"""Walk capture paths, detect each file's format by content, read it into the store: detect → reader → sink.

Each format is a reader (``collectors.readers``); this module knows none of them by name.

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

from . import backends, checks, detect, streams
from .parallel import Pool
from .problems import Problems
from .small_files import SmallFiles
from .sniff import HEAD_BYTES
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
    """Read one file into the store (its ``inputs`` row included). With ``small``, a small file of a reader
    that offers ``small_lines`` (OTLP JSON lines) is decoded now and loaded with the others at ``small.flush()``."""
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
            head = streams.peek(src, HEAD_BYTES)
            size = os.fstat(src.raw.fileno()).st_size
        except OSError as exc:  # vanished or changed between the walk and now
            result.skipped.append({"path": src_name, "reason": f"unreadable: {exc.strerror or exc}"})
            return
        reader, why = detect.detect(head, size)
        if reader is None:
            reason = why if not src.errors else f"{why}; {src.errors[0]}"
            if src.compression and not head:
                reason = f"empty or damaged {src.compression} file" + (f": {src.errors[0]}" if src.errors else "")
            result.skipped.append({"path": src_name, "reason": reason})
            return
        label = f"{reader.FORMAT}+{src.compression}" if src.compression else reader.FORMAT
        small_lines = getattr(reader, "small_lines", None)
        data = small_lines(src, head, size) if small is not None and small_lines is not None \
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
            sink = SpanSink(store, src.name, result.problems)
            samples = reader.read(src, sink, pool, (lambda: tick(src.position())) if tick else None)
            sink.flush()
            spans = sink.spans_written
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
