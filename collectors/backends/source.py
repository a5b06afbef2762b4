"""Source URLs of trace backends, their window (``--since``, ``--from``/``--to``) and ``BackendError``."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from triage.errors import UsageError

SCHEMES = ("clickhouse", "clickhouses", "chdb", "tempo", "jaeger")
# Spans of whole traces pulled for stage attribution and the rules when --max-spans is not given: sized so
# that a 10M-span window gives its first finding within ~10 s on this project's 2-core machine (500,000 took
# 38 s there, benchmarks/RESULTS.md); ~15,000 requests of 6-7 spans still give a tail cohort of ~750.
DEFAULT_MAX_SPANS = 100_000
DEFAULT_SINCE_S = 15 * 60


class BackendError(UsageError):
    """A backend could not answer for a reason the user can fix; the message says which and what to do."""


@dataclass(frozen=True)
class Window:
    start_ns: int
    end_ns: int

    def describe(self) -> str:
        return f"{iso(self.start_ns)} → {iso(self.end_ns)}"


class Source(str):
    """A backend URL (its text, shown as is: it never holds a password) with the window and detail budget."""

    window: Window
    max_spans: int

    def __new__(cls, url: str, window: Window, max_spans: int = DEFAULT_MAX_SPANS):
        self = super().__new__(cls, url)
        self.window = window
        self.max_spans = max_spans
        return self

    @property
    def parts(self):
        return urlsplit(str(self))

    @property
    def scheme(self) -> str:
        return self.parts.scheme

    def query(self, name: str, default: str | None = None) -> str | None:
        return (parse_qs(self.parts.query).get(name) or [default])[-1]


def is_url(text) -> bool:
    """Whether a PATH argument names a trace backend (``scheme://...`` of a known scheme)."""
    return isinstance(text, str) and re.match(r"^[a-z]+://", text) is not None and text.split("://")[0] in SCHEMES


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str, flag: str) -> int:
    """An ISO 8601 time (``2026-12-01T18:00:00Z``; no zone means UTC) as nanoseconds since the epoch."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BackendError(f"{flag} {text!r} is not an ISO 8601 time (e.g. 2026-12-01T18:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(round(t.timestamp() * 1e6)) * 1000


def window(since_s: float | None = None, start: str | None = None, end: str | None = None,
           now_ns: int | None = None) -> Window:
    """The window from ``--since`` (seconds back from now) or ``--from``/``--to`` (``--to`` defaults to now);
    the last 15 minutes when none is given."""
    now = now_ns if now_ns is not None else time.time_ns()
    if since_s is not None and (start or end):
        raise BackendError("give either --since or --from/--to, not both")
    if start:
        s = parse_time(start, "--from")
        e = parse_time(end, "--to") if end else now
    elif end:
        raise BackendError("--to needs --from (or use --since)")
    else:
        e = now
        s = e - int((since_s if since_s is not None else DEFAULT_SINCE_S) * 1e9)
    if e <= s:
        raise BackendError(f"the window is empty: {iso(s)} is not before {iso(e)}")
    return Window(s, e)


def check_url(url: str) -> None:
    """BackendError saying what is wrong with a backend URL (credentials in it are refused)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port that is not a number raises ValueError)
    except ValueError as exc:
        raise BackendError(f"{url.split('@')[-1]} is not a valid URL ({exc})") from None
    var = f"TRIAGE_{'CLICKHOUSE' if parts.scheme.startswith(('clickhouse', 'chdb')) else parts.scheme.upper()}_PASSWORD"
    if ":" in parts.netloc.rpartition("@")[0]:
        raise BackendError(f"a password in the URL ({parts.scheme}://***@{parts.netloc.rpartition('@')[2]}) is "
                           f"refused: it would show in `ps`, shell history and logs; put it in the environment "
                           f"({var}, or {var}_FILE naming a file)")
    if parts.scheme != "chdb" and not parts.hostname:
        raise BackendError(f"{url}: no host (e.g. {parts.scheme}://localhost:8123/otel)")


def resolve(paths: list, since: str | None = None, start: str | None = None, end: str | None = None,
            max_spans: int | None = None) -> list:
    """``paths`` with each backend URL turned into a ``Source`` (files and folders unchanged); BackendError
    on a bad URL or window. ``since`` is a duration text (``15m``)."""
    urls = [p for p in paths if is_url(p)]
    if not urls:
        if since or start or end:
            raise BackendError("--since/--from/--to select a window of a trace backend; no backend URL was given "
                               "(e.g. clickhouse://localhost:8123/otel)")
        return list(paths)
    if max_spans is not None and max_spans < 1:
        raise BackendError(f"--max-spans must be at least 1 (got {max_spans})")
    since_s = None
    if since is not None:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", since)
        if not m:
            raise BackendError(f"invalid --since {since!r} (e.g. 30s, 15m, 2h, 1d)")
        since_s = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    w = window(since_s, start, end)
    for u in urls:
        check_url(u)
    return [Source(p, w, max_spans or DEFAULT_MAX_SPANS) if is_url(p) else p for p in paths]


def secret(env, name: str) -> str | None:
    """A credential from the environment, ``NAME`` or the file ``NAME_FILE`` names (a mounted secret), with
    surrounding whitespace removed; never from argv. None when neither is set."""
    if env.get(name):
        return env[name].strip()
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise BackendError(f"{name}_FILE ({path}): {exc.strerror or exc}") from None
