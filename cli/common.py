"""What every command group shares: printing a result, durations, the OTLP listen address, ingest progress on
stderr, input-path checks, and the line between a usage error and a bug.

A usage error is an ``OSError`` (a missing or unreadable file, a port in use) or a ``UsageError``
(triage/errors.py: bad constraints, listen address, --db file, duration, ``TRIAGE_*`` variable, a --settle too
long for the window, ...), whose message says what to change. Any other exception (a ``KeyError``, a
``ValueError`` from a library or a conversion, ...) is a bug.
"""
from __future__ import annotations

import sys
from pathlib import Path

from triage.errors import UsageError


def user_error(exc: BaseException) -> bool:
    """Whether ``exc`` was raised for the user (triage/errors.py), not by a bug."""
    return isinstance(exc, (OSError, UsageError))


def parse_duration(text: str) -> float:
    """'30s', '15m', '2h', '500ms' or plain seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text or "")
    if not m:
        raise UsageError(f"invalid duration {text!r} (e.g. 30s, 15m, 2h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def listen_address(text: str):
    """--otlp-listen: (host, port), or None for 'off'; ListenError saying what is wrong."""
    from triage.collectors.receiver import parse_listen

    return parse_listen(text)


def emit(result: dict, fmt: str, markdown) -> None:
    """Print a command's result: the JSON object, or its Markdown rendering."""
    import orjson

    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(markdown(result))


def progress_to_stderr():
    """An ingest progress callback that draws one line on a terminal's stderr (None when it is not one)."""
    if not sys.stderr.isatty():
        return None

    def progress(done: int, total: int, path: str) -> None:
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(f"\r\x1b[2Kingesting {pct:5.1f}%  {Path(path).name if path else 'done'}")
        if done >= total:
            sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()
    return progress


def check_paths(paths: list[str], db: str | None) -> str | None:
    """What is wrong with the inputs of a command that reads captures (None when nothing is)."""
    if not paths and not db:
        return "no input: give one or more files or folders (or --db PATH of an existing store)"
    from triage.collectors.backends import Source

    missing = [p for p in paths if not isinstance(p, Source) and not Path(p).exists()]
    if missing:
        return f"no such file or directory: {', '.join(missing)}"
    return None


def backend_window(sp) -> None:
    """The options of a trace backend input (a PATH that is a URL): its window and the detail budget."""
    g = sp.add_argument_group("trace backends (a PATH that is a clickhouse://, tempo:// or jaeger:// URL)")
    g.add_argument("--since", metavar="DURATION", help="the window: this far back from now (15m, 2h; default 15m)")
    g.add_argument("--from", dest="window_from", metavar="ISO8601", help="the window's start (2026-12-01T18:00:00Z)")
    g.add_argument("--to", dest="window_to", metavar="ISO8601", help="the window's end (default: now)")
    g.add_argument("--max-spans", type=int, metavar="N",
                   help="most spans of whole traces pulled for stages and rules (sampled by trace id beyond it; "
                        "default 100000); the latency headline is exact whatever N")


def resolve_sources(args) -> list:
    """The PATH arguments with each backend URL turned into a source carrying the window (UsageError: exit 2)."""
    from triage.collectors.backends import resolve

    return resolve(args.paths, args.since, args.window_from, args.window_to, args.max_spans)
