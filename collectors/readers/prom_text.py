"""Prometheus text exposition (and OpenMetrics) with or without timestamps.

Text format timestamps are milliseconds; OpenMetrics uses seconds. A file is read in chunks, so the unit
is decided per sample by magnitude (below 1e11 is seconds: 1e11 ms is 1973, 1e11 s is year 5138), which
also covers OpenMetrics files whose ``# EOF`` has not been reached yet.
Samples without a timestamp get ``default_ts_ms`` (the file's modification time): a single scrape.
Trailing commas in label sets (TorchServe) and metric names with colons (vLLM) are legal.
"""
from __future__ import annotations

import os
import re

from .. import streams
from ..parallel import Pool
from ..problems import Problems
from ..sniff import looks_json, text_of
from ..spans import SpanSink

FORMAT = "prometheus-text"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{.*\})?\s*(\S+)(?:\s+(\S+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text: str) -> dict[str, str] | None:
    inner = text[1:-1].strip()
    out: dict[str, str] = {}
    pos = 0
    while pos < len(inner):
        m = _LABEL.match(inner, pos)
        if not m:
            return None
        out[m.group(1)] = re.sub(r'\\[\\"n]', lambda x: _UNESCAPE[x.group(0)], m.group(2))
        pos = m.end()
    return out


def is_prometheus_text(head: str) -> bool:
    """Content sniffing: the first meaningful lines are HELP/TYPE comments or sample lines."""
    seen = 0
    for line in head.splitlines()[:20]:
        line = line.strip()
        if not line:
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE ") or line.startswith("# UNIT "):
            seen += 1
        elif line.startswith("#"):
            continue
        elif _SAMPLE.match(line) and _value(_SAMPLE.match(line).group(3)) is not None:
            seen += 1
        else:
            return False
        if seen >= 2:
            return True
    return seen >= 1


def sniff(head: bytes, size: int) -> bool:
    text = None if looks_json(head) else text_of(head)
    return text is not None and is_prometheus_text(text)


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
    """The samples, chunk by chunk, into the sink's store; returns how many. Samples without a timestamp get
    the file's modification time."""
    default_ts = int(os.fstat(src.raw.fileno()).st_mtime * 1000)
    n = 0
    last, first_line = b"\n", 1
    for chunk, first_line in streams.line_chunks(src):
        cols = parse(chunk.decode("utf-8", errors="replace"), src.name, sink.problems, default_ts, first_line)
        n += sink.store.insert_samples(*cols, source=src.name)
        last = chunk
        if progress:
            progress()
    if not last.endswith(b"\n"):  # the exposition format ends every line with a line feed
        lineno = first_line + last.count(b"\n")
        sink.problems.add(src.name, f"line {lineno}",
                          "file ends in the middle of a line (truncated?); its last sample may be cut short")
    return n


def _value(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def parse(text: str, source: str, problems: Problems, default_ts_ms: int, first_lineno: int = 1):
    """Returns columns (ts_ms, metric, labels, value) for every sample; bad lines become problems."""
    ts_out: list[int] = []
    names: list[str] = []
    labels: list[dict] = []
    values: list[float] = []
    for lineno, raw in enumerate(text.splitlines(), start=first_lineno):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            problems.add(source, f"line {lineno}", f"not a sample line: {line[:80]!r}")
            continue
        name, lab, val, ts = m.groups()
        value = _value(val)
        if value is None:
            problems.add(source, f"line {lineno}", f"invalid value {val!r} for {name}")
            continue
        lmap = _labels(lab) if lab else {}
        if lmap is None:
            problems.add(source, f"line {lineno}", f"invalid label set {lab[:80]!r}")
            continue
        if ts is None:
            t = default_ts_ms
        else:
            tv = _value(ts)
            if tv is None:
                problems.add(source, f"line {lineno}", f"invalid timestamp {ts!r}")
                continue
            if tv != tv or abs(tv) > 9e15:
                problems.add(source, f"line {lineno}", f"invalid timestamp {ts!r}")
                continue
            t = int(round(tv * 1000)) if abs(tv) < 1e11 else int(tv)
        ts_out.append(t)
        names.append(name)
        labels.append(lmap)
        values.append(value)
    return ts_out, names, labels, values
