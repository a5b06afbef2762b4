"""The Textual app: it owns the state and every worker (ingest and analysis, live refresh, the requests table's
pages, traces, the model fix); workers deliver results as messages, screens post theirs up (tui/messages.py)."""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from triage.collectors.store import describe

from .messages import (AnalysisFailed, AnalysisReady, CaptureLoaded, CohortReady, CompareReady, ExportRequests,
                       FetchRequests,
                       FixDone, IngestProgress, LiveRefreshed, LoadTrace, Notice, OpenTrace, PreviewModelFix,
                       RequestsPage, RollBackModelFix, RolledBack, ScopeReady, TraceLoaded)
from .screens.budget import BudgetScreen
from .screens.compare import CompareScreen
from .screens.filter import FilterScreen
from .screens.findings import FindingsScreen
from .screens.help import HelpScreen
from .screens.remediate import PreviewScreen, ResultScreen
from .screens.overview import OverviewScreen
from .screens.requests import RequestsScreen
from .screens.trace import TraceScreen


class TriageApp(App):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "triage"
    BINDINGS = [
        Binding("o", "show('overview')", "Overview"),
        Binding("f", "show('findings')", "Findings"),
        Binding("b", "show('budget')", "Budget"),
        Binding("r", "show('requests')", "Requests"),
        Binding("c", "show('compare')", "Compare", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("F", "cohort", "Rules on filtered cohort"),
        Binding("colon", "command", "Command line"),
        Binding("escape", "back", "Back", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("p", "pause", "Pause/resume", show=False),
        Binding("comma", "scrub(-1)", "Earlier", show=False),
        Binding("full_stop", "scrub(1)", "Later", show=False),
    ]

    def __init__(self, paths: list[str], db: str | None = None, constraints_file: str | None = None,
                 source_title: str = "", live=None, refresh_s: float = 5.0, model_repo: str | None = None,
                 compare_before: str | None = None) -> None:
        """``compare_before``: a capture to compare this one with (as its before) once it is analysed, opening
        on the compare screen (``triage compare BEFORE AFTER`` in a terminal)."""
        super().__init__()
        self.model_repo = model_repo   # where the model fixes act (a Triton model repository)
        self.applied: list[str] = []   # ledger ids applied in this session, newest last
        self.guardrails: dict | None = None  # [guardrails] of the constraints in force
        self.store = None
        self.live = live          # a triage.sessions.live.LiveSession (its caller stops it), or None for a replay
        self.refresh_s = refresh_s
        self.paused = False
        self.cursor: int | None = None  # index into live snapshots while scrubbing; None = follow latest
        self.paths = paths
        self.db = db
        self.constraints_file = constraints_file
        self.sub_title = source_title
        self.report: dict | None = None
        from triage.analyzers.requests import Filter

        self.filter = Filter("")       # scopes the requests table and the overview; F runs the rules on its cohort
        self.cohort: str | None = None  # the filter whose cohort the overview/findings/budget show, if any
        self.overview = OverviewScreen()
        self.findings = FindingsScreen()
        self.budget = BudgetScreen()
        self.requests = RequestsScreen(self.filter, live=live is not None)
        self.compare = CompareScreen()
        self.compare_before = compare_before  # compared when the final report arrives
        self.history: list[str] = []   # named screens shown before this one: Esc goes back through them

    def run(self, *args, **kwargs):
        """Run the app; SIGTERM, SIGHUP or the terminal going away make it exit (triage/lifecycle.py)."""
        from triage import lifecycle

        with lifecycle.stopper(self.exit_soon):
            return super().run(*args, **kwargs)

    def get_driver_class(self):
        """Textual's own choice, except on Linux terminals: a driver that can exit after a hang-up."""
        import sys

        from textual import constants

        if constants.DRIVER is None and sys.platform != "win32":
            from .terminal import HangupSafeDriver

            return HangupSafeDriver
        return super().get_driver_class()

    def exit_soon(self, return_code: int) -> bool:
        """Exit from any thread or a signal handler; False when the app is not running (nothing to ask)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self.is_running:
            return False
        loop.call_soon_threadsafe(self.exit, None, return_code)
        return True

    def on_mount(self) -> None:
        import asyncio

        from .terminal import StoppableExecutor

        asyncio.get_running_loop().set_default_executor(StoppableExecutor(thread_name_prefix="triage-worker"))
        self.install_screen(self.overview, "overview")
        self.install_screen(self.findings, "findings")
        self.install_screen(self.budget, "budget")
        self.install_screen(self.requests, "requests")
        self.install_screen(self.compare, "compare")
        self.push_screen("overview")
        if self.compare_before is not None:
            self.compare.pending(self.compare_before, self._capture_label())
            self.action_show("compare")
        if self.live is None:
            self.analyze()
        else:
            self.live_refresh()

    # -- live mode: one refresh at a time; the next is armed only when this one is done -------------
    @work(thread=True, exclusive=True, group="live")
    def live_refresh(self) -> None:
        from triage.analyzers.latency import timeseries

        try:
            snap = self.live.refresh()
            series = {r: timeseries(self.live.store, r) for r in snap.report["latency"]}
        except Exception as exc:
            self.post_message(AnalysisFailed(describe(exc)))
        else:
            self.post_message(AnalysisReady(snap.report, series, live_status=snap.status))
        self.post_message(LiveRefreshed())

    def on_live_refreshed(self, msg: LiveRefreshed) -> None:
        self._arm()

    def _arm(self) -> None:
        if not self.paused and self.is_running:
            self.set_timer(self.refresh_s, self.live_refresh)

    def action_pause(self) -> None:
        if self.live is None:
            return
        self.paused = not self.paused
        self.notify("Paused: , and . scrub through earlier refreshes" if self.paused else "Resumed", timeout=3)
        if not self.paused:
            self.cursor = None
            self._arm()

    def action_scrub(self, step: int) -> None:
        if self.live is None or not self.live.snapshots:
            return
        if not self.paused:
            self.action_pause()
        n = len(self.live.snapshots)
        self.cursor = max(0, min(n - 1, (self.cursor if self.cursor is not None else n - 1) + step))
        snap = self.live.snapshots[self.cursor]
        status = dict(snap.status, scrub=f"{self.cursor + 1}/{n}")
        self.overview.show(snap.report, {}, None, status)
        self.findings.show(snap.report)
        self.budget.show(snap.report)

    @work(thread=True, exclusive=True, group="analysis")
    def analyze(self) -> None:
        from triage.analyzers.latency import timeseries
        from triage.sessions.offline import analyze

        def early(a, fraction: float) -> None:
            rep = a.report()
            self.post_message(AnalysisReady(rep, {r: timeseries(a.store, r) for r in rep["latency"]}, fraction))

        try:
            a = analyze(self.paths, db=self.db, constraints_file=self.constraints_file,
                        progress=lambda d, t, p: self.post_message(IngestProgress(d, t, p)), preliminary=early)
            report = a.report()
            series = {route: timeseries(a.store, route) for route in report["latency"]}
            from triage.analyzers.requests import materialize

            materialize(a.store)  # the requests table's rows, paged and sorted by the requests screen
        except Exception as exc:  # shown in the UI; the app stays up
            self.post_message(AnalysisFailed(describe(exc)))
            return
        self.post_message(CaptureLoaded(a.store, dict(a.constraints.guardrails)))
        self.post_message(AnalysisReady(report, series))

    def on_capture_loaded(self, msg: CaptureLoaded) -> None:
        self.store = msg.store  # the ledger's DuckDB table goes here too
        self.guardrails = msg.guardrails

    def on_ingest_progress(self, msg: IngestProgress) -> None:
        self.overview.set_progress(msg.done, msg.total, msg.path)

    def on_analysis_ready(self, msg: AnalysisReady) -> None:
        if msg.preliminary is not None and self.report is not None:
            return  # the final result already arrived
        if self.live is not None and self.paused:
            return  # scrubbing: keep showing the chosen snapshot
        self.overview.show(msg.report, msg.series, msg.preliminary, msg.live_status)
        self.findings.show(msg.report)
        self.budget.show(msg.report)
        n = sum(f["severity"] != "info" for f in msg.report["findings"])
        if msg.preliminary is not None:
            self.notify(f"Preliminary: {n} finding(s) from the first {msg.preliminary:.0%} of the capture", timeout=3)
            return
        self.report = msg.report
        self.notify(f"{msg.report['inputs']['spans']:,} spans, {n} finding(s)", timeout=3)
        if self.compare_before is not None and self.store is not None:
            before, self.compare_before = self.compare_before, None
            self.start_compare(before)

    def on_analysis_failed(self, msg: AnalysisFailed) -> None:
        self.overview.set_error(msg.error)
        self.notify(msg.error, severity="error", timeout=10)

    # -- the one-key model fix ---------------------------------------------------------------------
    def _model_dir(self, finding: dict):
        from pathlib import Path

        if not self.model_repo:
            return None
        repo = Path(self.model_repo)
        name = finding.get("scope", {}).get("model")
        if name and (repo / name).is_dir():
            return repo / name
        models = [p for p in repo.iterdir() if p.is_dir() and (p / "config.pbtxt").exists()]
        return models[0] if len(models) == 1 else None

    def preview_quantize(self, finding: dict) -> None:
        from triage.remediations.quantize import RemediationError, plan

        model_dir = self._model_dir(finding)
        if model_dir is None:
            self.notify("No model to act on: start with --model-repo DIR (a Triton model repository)", severity="warning")
            return
        guardrails = self.guardrails
        try:
            p = plan(str(model_dir), "dynamic", guardrails=guardrails or {"min_top1_agreement": 0.99})
        except RemediationError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify("Building and verifying the candidate…", timeout=3)
                self.run_quantize(p)

        self.push_screen(PreviewScreen(p.to_dict(), finding), answered)

    def on_preview_model_fix(self, msg: PreviewModelFix) -> None:
        self.preview_quantize(msg.finding)

    @work(thread=True, exclusive=True, group="remediation")
    def run_quantize(self, p) -> None:
        from triage.remediations.quantize import run

        try:
            result = run(p, store=self.store, progress=lambda m: self.post_message(Notice(m, timeout=2)))
        except Exception as exc:
            self.post_message(Notice(f"Quantization failed: {exc}", timeout=10, severity="error"))
            return
        self.post_message(FixDone(result))

    def on_fix_done(self, msg: FixDone) -> None:
        if msg.result.get("applied"):
            self.applied.append(msg.result["ledger_id"])
        self.push_screen(ResultScreen(msg.result))

    def on_notice(self, msg: Notice) -> None:
        self.notify(msg.text, severity=msg.severity, timeout=msg.timeout)

    def on_roll_back_model_fix(self, msg: RollBackModelFix) -> None:
        self.rollback_last()

    def rollback_last(self) -> None:
        if not self.applied:
            self.notify("Nothing applied in this session to roll back", timeout=3)
            return
        self.run_rollback(self.applied[-1])

    @work(thread=True, exclusive=True, group="remediation")
    def run_rollback(self, ledger_id: str) -> None:
        from triage.remediations.registry import RemediationError
        from triage.remediations.undo import rollback

        try:
            out = rollback(ledger_id, store=self.store)
        except RemediationError as exc:
            self.post_message(Notice(str(exc), timeout=8, severity="error"))
            return
        self.post_message(RolledBack(ledger_id, out["undone"]))

    def on_rolled_back(self, msg: RolledBack) -> None:
        self.applied.remove(msg.ledger_id)
        self.notify(f"Rolled back {msg.ledger_id}: {msg.undone}", timeout=5)

    def action_show(self, name: str) -> None:
        while len(self.screen_stack) > 1 and not self._named(self.screen):
            self.pop_screen()
        current = self._named(self.screen)
        if current and current != name:
            self.history.append(current)
        self.switch_screen(name)

    def _named(self, screen) -> str | None:
        return next((n for n, s in (("overview", self.overview), ("findings", self.findings),
                                    ("budget", self.budget), ("requests", self.requests),
                                    ("compare", self.compare)) if s is screen), None)

    def action_back(self) -> None:
        """Esc: close the screen on top (a trace, a dialog), else the previous named screen."""
        if not self._named(self.screen) and len(self.screen_stack) > 1:
            self.pop_screen()
        elif self.history:
            self.switch_screen(self.history.pop())

    def current_store(self):
        return self.store if self.store is not None else (self.live.store if self.live is not None else None)

    def open_trace(self, trace_id: str) -> None:
        self.push_screen(TraceScreen(trace_id))

    def on_open_trace(self, msg: OpenTrace) -> None:
        self.open_trace(msg.trace_id)

    # -- the requests table and traces: read from the store in workers, handed down to their screens ---
    def on_fetch_requests(self, msg: FetchRequests) -> None:
        self.fetch_requests(msg)

    @work(thread=True, exclusive=True, group="requests")
    def fetch_requests(self, want: FetchRequests) -> None:
        from triage.analyzers import requests as rq

        store = self.current_store()
        try:
            if store is None:
                raise RuntimeError("no capture loaded yet")
            if self.live is not None or not store.scalar(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'request_rows'"):
                rq.materialize(store)  # live: the window moved since the last look
            total = rq.count(store, want.filter)
            rows = rq.page(store, want.filter, want.sort, want.descending, want.offset, want.limit)
            origin = store.scalar("SELECT min(start_ns) FROM request_rows")
        except Exception as exc:
            self.post_message(RequestsPage(want.generation, want.offset, 0, [], None, 0, describe(exc)))
            return
        self.post_message(RequestsPage(want.generation, want.offset, total, rows, origin, want.cursor))

    def on_requests_page(self, msg: RequestsPage) -> None:
        self.requests.show_page(msg)

    def on_export_requests(self, msg: ExportRequests) -> None:
        self.export_requests(msg)

    @work(thread=True, group="export")
    def export_requests(self, want: ExportRequests) -> None:
        import csv
        import io

        from triage.analyzers import requests as rq

        from .export import write_new

        store = self.current_store()
        rows = rq.page(store, want.filter, want.sort, want.descending, 0, rq.count(store, want.filter))
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        path = write_new("requests", ".csv", buf.getvalue())
        self.post_message(Notice(f"Wrote {len(rows):,} requests to {path}", timeout=6))

    def on_load_trace(self, msg: LoadTrace) -> None:
        self.load_trace(msg)

    @work(thread=True, group="trace")  # not exclusive: each open trace screen waits for its own
    def load_trace(self, want: LoadTrace) -> None:
        from triage.analyzers.trace import load

        store = self.current_store()
        try:
            tr = load(store, want.trace_id) if store is not None else None
        except Exception as exc:  # shown, not raised: the app stays up
            self.post_message(TraceLoaded(want.screen, None, str(exc)))
            return
        self.post_message(TraceLoaded(want.screen, tr))

    def on_trace_loaded(self, msg: TraceLoaded) -> None:
        if msg.screen not in self.screen_stack:
            return  # closed while its trace was loading
        if msg.error is not None:
            msg.screen.show_error(msg.error)
        else:
            msg.screen.show_trace(msg.trace)

    # -- compare: another capture (before) with this one (after), as `triage compare` does ----------------
    def _capture_label(self) -> str:
        return ", ".join(self.paths) or self.db or "this capture"

    def start_compare(self, before: str) -> None:
        """Compare the capture at ``before`` with the loaded one, in a worker; the compare screen shows it."""
        if self.store is None or self.report is None or self.live is not None:
            self.notify("Compare needs a loaded capture (not live mode)", timeout=4)
            return
        after = self._capture_label()
        self.compare.pending(before, after)
        self.compare_captures(before, after, self.store, self.report["findings"])
        if self.screen is not self.compare:
            self.action_show("compare")

    @work(thread=True, exclusive=True, group="compare")
    def compare_captures(self, before: str, after: str, after_store, after_findings: list) -> None:
        from types import SimpleNamespace

        from triage.analyzers.compare import compare_analyses
        from triage.sessions.offline import analyze, load_constraints

        try:
            if not Path(before).exists():
                raise FileNotFoundError(f"no such file or directory: {before}")
            cons = load_constraints(self.paths, self.constraints_file)  # the CLI's: the after capture's
            a = analyze([before], constraints=cons)
            try:
                for label, store in (("BEFORE", a.store), ("AFTER", after_store)):
                    if not store.scalar("SELECT count(*) FROM requests"):
                        raise ValueError(f"no requests in {label}")
                result = compare_analyses(a, SimpleNamespace(store=after_store, findings=after_findings), cons)
            finally:
                a.store.close()
        except Exception as exc:  # shown on the compare screen; the app stays up
            self.post_message(CompareReady(None, before, after, describe(exc)))
            return
        self.post_message(CompareReady(result, before, after))

    def on_compare_ready(self, msg: CompareReady) -> None:
        if msg.error is not None:
            self.compare.failed(msg.error)
            self.notify(f"Compare: {msg.error}", severity="error", timeout=8)
            return
        self.compare.show(msg.result, msg.before, msg.after)
        regressed = sum(e["verdict"] == "regressed" for e in msg.result["routes"].values())
        self.notify(f"Compared {len(msg.result['routes'])} route(s): {regressed} regressed at p95", timeout=4)

    def action_command(self) -> None:
        from .screens.command import CommandScreen

        def done(cmd) -> None:
            if cmd is None:
                return
            name, arg = cmd
            if name in ("overview", "findings", "budget", "requests") or (name == "compare" and not arg):
                self.action_show(name)
            elif name == "compare":
                self.start_compare(arg)
            elif name == "trace":
                self.open_trace(arg)
            elif name == "filter":
                from triage.analyzers.requests import compile_filter

                self.set_filter(compile_filter(arg))
            elif name == "cohort":
                self.action_cohort()
            elif name == "help":
                self.action_help()
            elif name == "quit":
                self.exit()

        self.push_screen(CommandScreen(), done)

    def action_filter(self) -> None:
        self.push_screen(FilterScreen(self.filter.text), self.set_filter)

    def set_filter(self, flt) -> None:
        """Scope the requests table and the overview to ``flt`` (None: the dialog was cancelled), shown in
        the header."""
        if flt is None:
            return
        self.filter = flt
        self.requests.filter = flt
        base = self.sub_title.split(" · filter: ")[0]
        self.sub_title = f"{base} · filter: {flt.text}" if flt else base
        if not flt:
            self.overview.set_scope(None)
        elif self.store is not None and self.live is None:
            self.scope_overview(flt, self.store)
        if isinstance(self.screen, RequestsScreen):
            self.requests.reload()
        else:
            self.action_show("requests")

    @work(thread=True, exclusive=True, group="scope")
    def scope_overview(self, flt, store) -> None:
        from triage.analyzers.latency import cohort_latency
        from triage.analyzers.requests import cohort_where

        try:
            where, params = cohort_where(flt)
            lat, stages, series = cohort_latency(store, where, params)
            total = int(store.scalar("SELECT count(*) FROM requests") or 0)
        except Exception as exc:
            self.post_message(Notice(f"Could not scope the overview to {flt.text}: {describe(exc)}", timeout=8,
                                     severity="error"))
            return
        self.post_message(ScopeReady(flt, lat, stages, series, total))

    def on_scope_ready(self, msg: ScopeReady) -> None:
        if msg.filter is self.filter:  # not a filter replaced since
            self.overview.set_scope(msg)

    def action_cohort(self) -> None:
        """F: the rules again, on the requests the filter selects (or the whole capture when there is none)."""
        if self.current_store() is None or self.live is not None:
            self.notify("F needs a loaded capture (not live mode)", timeout=4)
            return
        self.notify(f"Running the rules on the cohort {self.filter.text or '(all requests)'}…", timeout=3)
        self.analyze_cohort(self.filter)

    @work(thread=True, exclusive=True, group="cohort")
    def analyze_cohort(self, flt) -> None:
        from triage.analyzers.cohort import analyze_cohort

        try:
            report = analyze_cohort(self.current_store(), flt, self.paths, self.constraints_file)
        except Exception as exc:
            self.post_message(AnalysisFailed(describe(exc)))
            return
        self.post_message(CohortReady(report, flt))

    def on_cohort_ready(self, msg: CohortReady) -> None:
        report, flt = msg.report, msg.filter
        self.cohort = flt.text or None
        label = f"COHORT {flt.text}" if flt else None
        self.overview.show(report, {}, None, None, cohort=label)
        self.findings.show(report, cohort=label)
        self.budget.show(report)
        n = sum(f["severity"] != "info" for f in report["findings"])
        self.notify(f"{label or 'All requests'}: {report['inputs']['spans']:,} spans, {n} finding(s)", timeout=4)

    @classmethod
    def key_places(cls):
        """Where each set of bindings applies, in the order the help lists them (tui/keys.py reads them)."""
        from .screens.command import CommandScreen
        from .widgets.waterfall import Waterfall

        return (("everywhere", (cls,)), ("overview", (OverviewScreen,)), ("findings", (FindingsScreen,)),
                ("budget", (BudgetScreen,)), ("requests", (RequestsScreen,)), ("compare", (CompareScreen,)), ("trace", (TraceScreen, Waterfall)), ("filter", (FilterScreen,)),
                ("command line", (CommandScreen,)),
                ("fix preview", (PreviewScreen,)), ("fix result", (ResultScreen,)), ("help", (HelpScreen,)))

    def action_help(self) -> None:
        from .keys import keys

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(keys(self.key_places())))
