"""The Textual app: ingest and analysis in a worker thread, results delivered as messages."""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from .messages import AnalysisFailed, AnalysisReady, IngestProgress
from .screens.findings import FindingsScreen
from .screens.help import HelpScreen
from .screens.overview import OverviewScreen


class TriageApp(App):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "triage"
    BINDINGS = [
        Binding("o", "show('overview')", "Overview"),
        Binding("f", "show('findings')", "Findings"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, paths: list[str], db: str | None = None, constraints_file: str | None = None,
                 source_title: str = "") -> None:
        super().__init__()
        self.paths = paths
        self.db = db
        self.constraints_file = constraints_file
        self.sub_title = source_title
        self.report: dict | None = None
        self.overview = OverviewScreen()
        self.findings = FindingsScreen()

    def on_mount(self) -> None:
        self.install_screen(self.overview, "overview")
        self.install_screen(self.findings, "findings")
        self.push_screen("overview")
        self.analyze()

    @work(thread=True, exclusive=True, group="analysis")
    def analyze(self) -> None:
        from analyzers.latency import timeseries
        from analyzers.session import analyze

        def early(a, fraction: float) -> None:
            rep = a.report()
            self.post_message(AnalysisReady(rep, {r: timeseries(a.store, r) for r in rep["latency"]}, fraction))

        try:
            a = analyze(self.paths, db=self.db, constraints_file=self.constraints_file,
                        progress=lambda d, t, p: self.post_message(IngestProgress(d, t, p)), preliminary=early)
            report = a.report()
            series = {route: timeseries(a.store, route) for route in report["latency"]}
        except Exception as exc:  # shown in the UI; the app stays up
            self.post_message(AnalysisFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(AnalysisReady(report, series))

    def on_ingest_progress(self, msg: IngestProgress) -> None:
        self.overview.set_progress(msg.done, msg.total, msg.path)

    def on_analysis_ready(self, msg: AnalysisReady) -> None:
        if msg.preliminary is not None and self.report is not None:
            return  # the final result already arrived
        self.overview.show(msg.report, msg.series, msg.preliminary)
        self.findings.show(msg.report)
        n = sum(f["severity"] != "info" for f in msg.report["findings"])
        if msg.preliminary is not None:
            self.notify(f"Preliminary: {n} finding(s) from the first {msg.preliminary:.0%} of the capture", timeout=3)
            return
        self.report = msg.report
        self.notify(f"{msg.report['inputs']['spans']:,} spans, {n} finding(s)", timeout=3)

    def on_analysis_failed(self, msg: AnalysisFailed) -> None:
        self.overview.set_error(msg.error)
        self.notify(msg.error, severity="error", timeout=10)

    def action_show(self, name: str) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        self.switch_screen(name)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
