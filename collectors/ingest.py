"""Walk capture paths, detect each file's format by content, read it into the store.

One progress callback ``progress(done_bytes, total_bytes, path)`` serves the TUI's bar and the CLI.
Unknown files are skipped and listed; damaged records are counted as problems; nothing raises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import detect, otlp_json, otlp_proto, prom_text
from .problems import Problems
from .spans import SpanSink
from .store import Store

Progress = Callable[[int, int, str], None]
HEAD_BYTES = 4096
_IGNORED_NAMES = {".DS_Store"}
_IGNORED_SUFFIXES = {".md", ".toml", ".txt", ".py", ".pyc"}


@dataclass
class IngestResult:
    files: int = 0
    spans: int = 0
    samples: int = 0
    skipped: list[dict] = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)
    paths: list[str] = field(default_factory=list)


def walk(paths: list[str | Path]) -> tuple[list[Path], list[dict]]:
    """Files under the given paths (recursively, sorted), and paths that do not exist."""
    files: list[Path] = []
    missing: list[dict] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            files.append(p)
        else:
            missing.append({"path": str(p), "reason": "no such file or directory"})
    return files, missing


def ingest_paths(store: Store, paths: list[str | Path], progress: Progress | None = None) -> IngestResult:
    files, missing = walk(paths)
    result = IngestResult(skipped=list(missing))
    total = sum(f.stat().st_size for f in files) or 1
    done = 0
    for f in files:
        size = f.stat().st_size
        if progress:
            progress(done, total, str(f))
        ingest_file(store, f, result)
        done += size
    if progress:
        progress(total, total, "")
    return result


def ingest_file(store: Store, path: Path, result: IngestResult) -> None:
    src = str(path)
    if path.name in _IGNORED_NAMES or path.suffix.lower() in _IGNORED_SUFFIXES:
        result.skipped.append({"path": src, "reason": f"not telemetry ({path.suffix or path.name})"})
        return
    if store.scalar("SELECT count(*) FROM inputs WHERE path = ?", [src]):
        result.skipped.append({"path": src, "reason": "already in the store (--db)"})
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.skipped.append({"path": src, "reason": f"unreadable: {exc.strerror or exc}"})
        return
    fmt, why = detect.detect(data[:HEAD_BYTES], lambda: data)
    if fmt is None:
        result.skipped.append({"path": src, "reason": why})
        return
    spans = samples = 0
    before = result.problems.count
    if fmt in (detect.OTLP_JSON, detect.OTLP_PROTO):
        sink = SpanSink(store, src, result.problems)
        reader = otlp_json if fmt == detect.OTLP_JSON else otlp_proto
        reader.read_file(data, sink)
        sink.flush()
        spans = sink.spans_written
    elif fmt == detect.PROM_TEXT:
        text = data.decode("utf-8", errors="replace")
        mtime_ms = int(os.stat(path).st_mtime * 1000)
        cols = prom_text.parse(text, src, result.problems, mtime_ms)
        samples = store.insert_samples(*cols, source=src)
    result.files += 1
    result.spans += spans
    result.samples += samples
    result.paths.append(src)
    store.execute("INSERT INTO inputs VALUES (?, ?, ?, ?, ?)",
                  [src, fmt, spans, samples, result.problems.count - before])
