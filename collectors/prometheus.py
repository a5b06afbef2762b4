"""Prometheus (or Thanos, Mimir, VictoriaMetrics: the same HTTP API) as a live metrics source.

Queries go through prometheus-api-client as range queries with the aggregation pushed down to the server
(``sum by``/``avg by`` over the labels the rules need, ``histogram_quantile`` over ``rate`` for latency
histograms), so triage pulls a handful of series however many pods export them. Results land in the
``samples`` table under the metric's own name, exactly as if they had been read from a file.

Credentials come from the environment or a file, never from the command line (a URL with ``user:pass@`` is
refused), and are never shown: TRIAGE_PROMETHEUS_BEARER_TOKEN[_FILE], TRIAGE_PROMETHEUS_USERNAME +
TRIAGE_PROMETHEUS_PASSWORD[_FILE]; surrounding whitespace (a mounted secret's trailing newline) is removed.
Errors name the HTTP status, never a response body or a header (a proxy's 401 page may echo the request's
Authorization header), and every URL shown goes through ``redact_url``.
TLS certificates are verified; TRIAGE_PROMETHEUS_CA (or ``ca_file``) names a custom CA bundle.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from triage.errors import UsageError

from .metric_catalogue import CATALOGUE, live_queries


class PrometheusError(RuntimeError):
    """Prometheus could not be queried; the message is the reason shown as 'stale: ...'."""


CREDENTIAL_VARIABLES = "TRIAGE_PROMETHEUS_USERNAME and TRIAGE_PROMETHEUS_PASSWORD (or TRIAGE_PROMETHEUS_PASSWORD_FILE)"


def redact_url(url: str) -> str:
    """``url`` as it may be shown: any ``user:password@`` replaced by ``***@`` (the one place URLs are cleaned)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def check_url(url: str) -> str:
    """The Prometheus base URL, or UsageError saying what is wrong with it (the URL redacted in the message).
    Credentials in the URL are refused: they would be visible in ``ps``, shell history and every message."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise UsageError(f"{redact_url(url)} is not a valid URL ({exc})") from None
    if "@" in parts.netloc:
        raise UsageError(f"credentials in the URL ({redact_url(url)}) are refused: they would show in `ps`, shell "
                         f"history and logs; put them in {CREDENTIAL_VARIABLES}, or use TRIAGE_PROMETHEUS_BEARER_TOKEN")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{redact_url(url)} is not an http:// or https:// URL with a host")
    return url


_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an Authorization header can carry unmangled


@dataclass(frozen=True)
class Credentials:
    bearer: str | None = None
    basic: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never print secrets
        kind = "bearer" if self.bearer else "basic" if self.basic else "none"
        return f"Credentials({kind}, ***)"

    def secrets(self) -> list[str]:
        """The secret values, so that any text shown can be checked for them."""
        import base64

        out = [self.bearer] if self.bearer else []
        if self.basic and self.basic[1]:
            out.append(self.basic[1])
            out.append(base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode("latin-1", "replace")).decode())
        return out

    @staticmethod
    def from_env(env=os.environ) -> "Credentials":
        """Read the TRIAGE_PROMETHEUS_* variables; UsageError names the variable (or file) that is unusable,
        never its value."""
        def read(name: str) -> tuple[str | None, str]:
            if env.get(name):
                return env[name].strip(), name
            path = env.get(f"{name}_FILE")
            if not path:
                return None, name
            return Path(path).read_text().strip(), f"{name}_FILE ({path})"

        token, where = read("TRIAGE_PROMETHEUS_BEARER_TOKEN")
        if token is not None and not _TOKEN.fullmatch(token):
            raise UsageError(f"{where}: the token is empty or holds a space, line break or other character an "
                             f"HTTP header cannot carry (value not shown)")
        user = (env.get("TRIAGE_PROMETHEUS_USERNAME") or "").strip()
        if ":" in user:
            raise UsageError("TRIAGE_PROMETHEUS_USERNAME: a user name for basic auth cannot hold ':'")
        password, where = read("TRIAGE_PROMETHEUS_PASSWORD")
        if password is not None and any(c in password for c in "\r\n\0"):
            raise UsageError(f"{where}: the password holds a line break (value not shown)")
        if password and not user:
            raise UsageError(f"{where} is set but TRIAGE_PROMETHEUS_USERNAME is not")
        return Credentials(token or None, (user, password or "") if user else None)


class PrometheusSource:
    """Queries ``metrics`` (catalogue names; the whole catalogue by default): a live session passes exactly
    what the registered rules and the report read (``analyzers.engine.metrics_read``)."""

    def __init__(self, url: str, credentials: Credentials | None = None, ca_file: str | None = None,
                 timeout_s: float = 10.0, rediscover_s: float = 60.0, metrics=None):
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = check_url(url).rstrip("/")
        self.shown = redact_url(self.url)  # the URL in messages and in the samples' source
        creds = credentials or Credentials.from_env()
        self._secrets = creds.secrets()
        self._status: int | None = None  # HTTP status of the last answer (the client's errors carry the body)
        session = requests.Session()
        session.verify = ca_file or os.environ.get("TRIAGE_PROMETHEUS_CA") or True
        session.hooks["response"].append(self._saw)
        headers = {"Authorization": f"Bearer {creds.bearer}"} if creds.bearer else None
        # no hidden retries: the live loop retries with its own backoff and says the data is stale meanwhile
        self._pc = PrometheusConnect(url=self.url, headers=headers, auth=creds.basic, session=session,
                                     retry=Retry(total=0), timeout=timeout_s)
        self.metrics = tuple(CATALOGUE if metrics is None else metrics)
        unknown = [m for m in self.metrics if m not in CATALOGUE]
        if unknown:
            raise ValueError(f"not in the metric catalogue: {', '.join(unknown)}")
        self._present: set[str] | None = None
        self._present_at = 0.0
        self.rediscover_s = rediscover_s  # how long the list of known series present is trusted
        self.rediscover_empty_s = min(rediscover_s, 10.0)  # ... when it is empty

    def _saw(self, response, *args, **kwargs):
        self._status = response.status_code

    def _call(self, fn, *args, **kwargs):
        """Run a client call; every failure becomes a PrometheusError whose message holds no header value and
        no response body (a proxy's error page may echo the Authorization header back). It is raised outside
        the handler, so the client's exception (which holds the body) is not even its __context__."""
        self._status = None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (every failure is classified below)
            error = self._error(self._reason(exc))
        raise error

    def _reason(self, exc: Exception) -> str:
        import requests

        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS verification failed for {self.shown}: {exc.__class__.__name__}"
        if isinstance(exc, requests.exceptions.Timeout):
            return f"{self.shown} did not answer in time"
        if isinstance(exc, requests.exceptions.ConnectionError):
            if "timed out" in str(exc).lower():  # with retries off, urllib3 wraps read timeouts this way
                return f"{self.shown} did not answer in time"
            return f"{self.shown} is unreachable"
        if isinstance(exc, requests.exceptions.InvalidHeader):  # a ValueError whose message holds the value
            return f"{self.shown}: a credential holds characters an HTTP header cannot carry"
        if self._status is not None and self._status != 200:  # the client's error: its message holds the body
            return self._http_status()
        if isinstance(exc, ValueError):  # a body that is not JSON
            return f"{self.shown} answered something that is not Prometheus JSON ({exc.__class__.__name__})"
        return f"{self.shown}: {exc.__class__.__name__}"

    def _http_status(self) -> str:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(self._status).phrase
        except ValueError:
            phrase = ""
        hint = (" (check the TRIAGE_PROMETHEUS_* credentials)" if self._status in (401, 403) else "")
        return f"{self.shown} answered HTTP {self._status} {phrase}{hint}".rstrip()

    def _error(self, message: str) -> PrometheusError:
        """A PrometheusError, with any secret value that still found its way into the message masked."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return PrometheusError(message)

    def present_metrics(self) -> set[str]:
        names = self._call(self._pc.all_metrics)
        if not isinstance(names, list):
            raise PrometheusError(f"{self.shown}: unexpected answer to the metric name list")
        wanted = {CATALOGUE[m].series_name for m in self.metrics}
        self._present = {n for n in names if n in wanted}
        self._present_at = time.monotonic()
        return self._present

    def queries(self) -> list[tuple[str, str]]:
        """(stored metric name, PromQL) for every metric of ``self.metrics`` the server has."""
        # asked again every rediscover_s (an exporter that started later), sooner while none are known (a
        # server that has not scraped yet); a failed re-ask keeps the list already known
        age = time.monotonic() - self._present_at
        if self._present is None or age >= (self.rediscover_s if self._present else self.rediscover_empty_s):
            try:
                self.present_metrics()
            except PrometheusError:
                if not self._present:
                    raise
        return live_queries(self.metrics, self._present)

    def fetch(self, store, start: datetime, end: datetime, step_s: float) -> int:
        """Replace the samples of this source in [start, end] with fresh query results; returns the count."""
        ts, names, labels, values = [], [], [], []
        for metric, promql in self.queries():
            result = self._call(self._pc.custom_query_range, promql, start_time=start, end_time=end,
                                step=f"{max(step_s, 1):g}s")
            if not isinstance(result, list):
                raise PrometheusError(f"{self.shown}: unexpected answer to {promql}")
            for series in result:
                lab = {k: str(v) for k, v in (series.get("metric") or {}).items() if k != "__name__"}
                for t, v in series.get("values") or []:
                    try:
                        ts.append(int(round(float(t) * 1000)))
                        values.append(float(v))
                    except (TypeError, ValueError):
                        continue
                    names.append(metric)
                    labels.append(lab)
        source = f"prometheus {self.shown}"
        store.execute("DELETE FROM samples WHERE source = ? AND ts_ms BETWEEN ? AND ?",
                      [source, _ms(start) - 1000, _ms(end) + 1000])  # the client rounds the range to seconds
        return store.insert_samples(ts, names, labels, values, source=source)


def _ms(d: datetime) -> int:
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return int(d.timestamp() * 1000)
