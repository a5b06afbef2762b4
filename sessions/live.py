"""Live mode: traces arrive at the OTLP receiver, metrics come from Prometheus; every refresh analyses
the rolling window and keeps a snapshot, so the user can pause and scrub back through earlier ones.

A trace joins the analysis once it has settled: no span of it has arrived for ``settle_s`` seconds
(default 10 s, two of the OpenTelemetry SDK's default 5 s export intervals). Services export in batches, so a
request's downstream spans (Triton's queue and compute) often arrive seconds after its root; analysed early,
such requests look as if they never queued. A trace that keeps growing is analysed anyway once its first span
is a minute old (or six settle periods; at most half the window). What is still settling is counted in the snapshot's status, and
``stop()`` moves it in, so nothing acknowledged is lost. ``finish()`` (a bounded run's last snapshot) closes the
receiver before it counts, so every acknowledged span is either in that snapshot or counted as settling.

The window follows arrival, not the spans' own timestamps: a trace leaves it ``window_s`` after its last span
arrived, so an exporter whose clock is off is still analysed (the receiver reports the skew as a problem).
The receiver only stages spans with their arrival time; promotion and the window are sessions/staging.py.

Prometheus faults never stop the session: the data is marked stale with the reason, and the next
attempt waits with exponential backoff (capped), while traces keep flowing.

With ``backend`` (a trace backend URL, ``collectors/backends``), every refresh reads the moving window from
the backend instead of (or besides) the receiver: what the previous poll loaded is replaced, the backend's
exact headline and sampling note go into the report, and a backend that fails is marked stale like Prometheus.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from triage.collectors.ingest import IngestResult
from triage.collectors.prometheus import PrometheusError, PrometheusSource
from triage.collectors.receiver import Receiver
from triage.collectors.store import Store

from triage.analyzers import engine
from triage.analyzers import report as report_mod
from triage.analyzers.constraints import Constraints
from triage.errors import UsageError

from .staging import Staging


@dataclass
class Snapshot:
    at: datetime
    report: dict              # exactly the `triage report` JSON
    status: dict              # live-only facts: window, Prometheus state ("ok", "off", "stale: ..."), receiver


@dataclass
class LiveSession:
    constraints: Constraints
    listen: tuple[str, int] | None = ("127.0.0.1", 4318)
    prometheus_url: str | None = None
    window_s: float = 900.0
    settle_s: float = 10.0
    history: int = 120
    db: str | None = None     # --db: keep everything received in this store file (collectors/archive.py)
    receiver_options: dict = field(default_factory=dict)  # Receiver keywords: tls_cert, tls_key, token, insecure
    store: Store = field(default_factory=Store)
    snapshots: deque = field(default_factory=deque)
    prometheus_state: str = "off"
    _receiver: Receiver | None = None
    _staging: Staging | None = None
    _source: PrometheusSource | None = None
    _backoff_s: float = 0.0
    _next_prom_try: float = 0.0
    _archive: object = None
    backend: str | None = None          # a trace backend URL polled every refresh (collectors/backends)
    backend_max_spans: int | None = None
    backend_state: str = "off"

    def start(self) -> "LiveSession":
        if not 0 <= self.settle_s < self.window_s / 2:
            raise UsageError(f"settle time {self.settle_s:g}s must be under half the {self.window_s:g}s window, "
                             f"or traces would leave the window before they are analysed")
        self.snapshots = deque(maxlen=self.history)
        if self.db:
            from triage.collectors.archive import Archive

            self._archive = Archive(self.store, self.db, f"live:{self.listen[0]}:{self.listen[1]}" if self.listen
                                    else "live")
        if self.listen:
            self._receiver = Receiver(self.store, host=self.listen[0], port=self.listen[1], staging=True,
                                      **self.receiver_options).start()
            self._staging = Staging(self._receiver)
        if self.prometheus_url:
            self.attach_prometheus(self.prometheus_url)
        return self

    def attach_prometheus(self, url: str) -> None:
        """Start querying a Prometheus that came up after the session (e.g. one scraping a server we started)."""
        self.prometheus_url = url
        self._source = PrometheusSource(url, metrics=engine.metrics_read())  # exactly what the analysis reads
        self.prometheus_state = "not yet queried"

    def stop(self) -> None:
        if self._receiver:
            self._receiver.stop()
            self._staging.promote()  # everything acknowledged ends up in the store, settled or not
            self._receiver = self._staging = None
        if self._archive:
            self._archive.close()  # and in the --db file
            self._archive = None

    @property
    def receiver_warning(self) -> str | None:
        """Why this receiver is less safe than it should be (a non-loopback address with --otlp-insecure)."""
        return self._receiver.warning if self._receiver else None

    @property
    def otlp_endpoint(self) -> str | None:
        return self._receiver.endpoint if self._receiver else None

    def finish(self) -> Snapshot:
        """The last snapshot of a bounded run: every trace begun by now, once it has had ``settle_s`` to
        complete; traces begun after now are left out (``status["settling"]`` counts them)."""
        if self._receiver:
            cut = self._receiver.clock()
            time.sleep(self.settle_s)
            self._receiver.close()  # nothing is acknowledged after this: the counts below are final
            self._staging.promote(begun_by_ns=cut)
        return self.refresh(promote=False)

    def refresh(self, now: datetime | None = None, promote: bool = True) -> Snapshot:
        """Pull metrics for the window (unless backing off), bring in the traces that have settled, drop what
        left the window, analyse."""
        now = now or datetime.now(timezone.utc)
        start = now - timedelta(seconds=self.window_s)
        if self._source and time.monotonic() >= self._next_prom_try:
            try:
                self._source.fetch(self.store, start, now, step_s=max(self.window_s / 300, 1))
                self.prometheus_state, self._backoff_s = "ok", 0.0
            except PrometheusError as exc:
                self._backoff_s = min(max(self._backoff_s * 2, 1.0), 60.0)
                self._next_prom_try = time.monotonic() + self._backoff_s
                self.prometheus_state = f"stale: {exc} (retry in {self._backoff_s:.0f}s)"
        backend_meta = self._poll_backend(start, now) if self.backend else None
        if self._receiver and promote:
            self._staging.promote(self.settle_s, max_hold_s=min(max(6 * self.settle_s, 60.0), self.window_s / 2))
        samples_cut_ms = int(start.timestamp() * 1000)
        if self._receiver:  # traces leave the window by arrival: an exporter's clock being off loses nothing
            keep = (lambda con, ids: self._archive.keep_leaving(con, ids, samples_cut_ms)) if self._archive else None
            self._staging.forget(self._receiver.clock() - int(self.window_s * 1e9), keep=keep)  # --db keeps it
        elif self._archive:
            with self.store.transaction() as con:
                self._archive.keep_leaving(con, "SELECT NULL WHERE false", samples_cut_ms)
        self.store.execute("DELETE FROM samples WHERE ts_ms < ?", [samples_cut_ms])
        engine.prepare(self.store, self.constraints)
        findings = engine.run_rules(self.store, self.constraints)
        ingest = IngestResult(files=0)
        if self._receiver:
            ingest.problems = self._receiver.all_problems()
        if backend_meta:
            ingest.backends = [backend_meta]
        rep = report_mod.build(self.store, ingest, findings, self.constraints)
        status = {"window_s": self.window_s, "at": now.isoformat(timespec="seconds"),
                  "prometheus": self.prometheus_state, "otlp_endpoint": self.otlp_endpoint,
                  "backend": self.backend_state,
                  "receiver": vars(self._receiver.stats).copy() if self._receiver else None,
                  "settling": {**self._staging.pending(), "settle_s": self.settle_s} if self._receiver else None}
        snap = Snapshot(now, rep, status)
        self.snapshots.append(snap)
        return snap

    def _poll_backend(self, start: datetime, now: datetime) -> dict | None:
        """Replace what the last poll loaded with the backend's current window; None (state: stale) on failure."""
        from triage.collectors.backends import DEFAULT_MAX_SPANS, BackendError, Source, Window
        from triage.collectors.backends.read import ingest as read_backend
        from triage.collectors.problems import Problems

        src = Source(self.backend, Window(int(start.timestamp() * 1e9), int(now.timestamp() * 1e9)),
                     self.backend_max_spans or DEFAULT_MAX_SPANS)
        try:  # what the last poll loaded is replaced (backends.read.ingest)
            meta = read_backend(self.store, src, Problems())
        except BackendError as exc:
            self.backend_state = f"stale: {exc}"
            return None
        self.backend_state = "ok"
        return meta
