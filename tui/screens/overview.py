"""Overview: request count, error rate, p50/p95/p99 over time, and where the p95 goes per route. With a filter
set (``/``), those figures are of the requests it selects, labelled with its expression."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from ..format import badge, esc, share_bar
from ..widgets.latency_plot import LatencyPlot


class OverviewScreen(Screen):
    BINDINGS = [
        Binding("right_square_bracket", "route(1)", "Next route"),
        Binding("left_square_bracket", "route(-1)", "Prev route"),
        Binding("e", "export", "Export CSV", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: dict | None = None
        self.series: dict = {}
        self.preliminary: float | None = None
        self.live: dict | None = None
        self.route_index = 0
        self.cohort: str | None = None
        self.scope = None  # a messages.ScopeReady while a filter is set: its figures replace the report's

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="loading"):
            yield Static("Loading…", id="load-status")
            yield ProgressBar(total=100, id="load-progress", show_eta=False)
        yield Static("", id="summary")
        yield Static("", id="top-finding")
        yield LatencyPlot(id="plot")
        yield DataTable(id="stages", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#stages", DataTable)
        table.add_columns("stage", "share of p95 tail", "", "p50 ms", "p95 ms")
        for wid in ("#summary", "#top-finding", "#plot", "#stages"):
            self.query_one(wid).display = False

    def set_progress(self, done: int, total: int, path: str) -> None:
        bar = self.query_one("#load-progress", ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        self.query_one("#load-status", Static).update(f"Ingesting {esc(path or '…')}")

    def set_error(self, error: str) -> None:
        self.query_one("#load-status", Static).update(f"[red]Could not load: {esc(error)}[/]")

    def show(self, report: dict, series: dict, preliminary: float | None = None, live: dict | None = None,
             cohort: str | None = None) -> None:
        """Render a report; ``preliminary`` is the fraction ingested when this is an early look; ``live``
        the live session's status (window, refresh time, Prometheus state, scrub position)."""
        self.report, self.series, self.preliminary, self.live = report, series, preliminary, live
        self.cohort = cohort  # the filter expression when this report is of a filtered cohort (F)
        if cohort:
            self.scope = None  # the report itself is of the filtered requests
        self.query_one("#loading").display = preliminary is not None
        for wid in ("#summary", "#top-finding", "#plot", "#stages"):
            self.query_one(wid).display = True
        self._render_route()

    def set_scope(self, scope) -> None:
        """Show the figures of ``scope`` (a messages.ScopeReady: latency, stages and series of the requests a
        filter selects) instead of the report's; None: the whole capture again."""
        self.scope = scope
        if self.report is not None and self.is_mounted:
            self._render_route()

    @property
    def routes(self) -> list[str]:
        return list(self.report["latency"]) if self.report else []

    def action_route(self, step: int) -> None:
        if self.routes:
            self.route_index = (self.route_index + step) % len(self.routes)
            self._render_route()

    def action_export(self) -> None:
        """The stage table of every route (of the filtered requests while a filter is set) to a new CSV."""
        import csv
        import io

        from ..export import write_new

        if self.report is None:
            return
        sc = self.scope
        latency, stages = (sc.latency, sc.stages) if sc is not None else (self.report["latency"], self.report["stages"])
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["route", "requests", "route_p50_ms", "route_p95_ms", "route_p99_ms", "stage",
                    "share_of_p95_tail", "stage_p50_ms", "stage_p95_ms", "filter"])
        n = 0
        for route, lat in latency.items():
            for stage, d in sorted(stages.get(route, {}).items(), key=lambda kv: -kv[1]["p95_share"]):
                w.writerow([route, lat["requests"], lat["p50_ms"], lat["p95_ms"], lat["p99_ms"], stage,
                            d["p95_share"], d["p50_ms"], d["p95_ms"], sc.filter.text if sc is not None else ""])
                n += 1
        path = write_new("overview", ".csv", buf.getvalue())
        self.notify(f"Wrote {n} stage rows of {len(latency)} route(s) to {path}", timeout=6)

    def _render_route(self) -> None:
        rep = self.report
        summary = self.query_one("#summary", Static)
        if not self.routes:
            if self.live is not None:
                settling = self.live.get("settling") or {}
                held = (f" · {settling['traces']:,} traces arrived, analysed once idle for {settling['settle_s']:.0f}s"
                        if settling.get("spans") else "")
                summary.update(f"Waiting for traces at {self.live.get('otlp_endpoint') or '(receiver off)'}{held} · "
                               f"prometheus {self.live.get('prometheus')}")
                return
            summary.update(f"No requests found. {rep['inputs']['spans']:,} spans, {rep['inputs']['samples']:,} samples; "
                           f"{len(rep['inputs']['skipped'])} files skipped.")
            return
        route = self.routes[self.route_index]
        lat, stages, series = rep["latency"][route], rep["stages"].get(route, {}), self.series.get(route, [])
        more = f"  [dim]route {self.route_index + 1}/{len(self.routes)} ([ ])[/]" if len(self.routes) > 1 else ""
        if self.cohort:
            more += f"  [black on cyan] {esc(self.cohort)} [/]"
        sc = self.scope
        if sc is not None:
            kept = sum(x["requests"] for x in sc.latency.values())
            more += (f"\n[black on cyan] FILTER {esc(sc.filter.text)} [/] [dim]{kept:,} of {sc.total:,} requests · these only[/]")
            lat, stages, series = sc.latency.get(route), sc.stages.get(route, {}), sc.series.get(route, [])
        if "figures" in rep:  # read from a trace backend: say which figures are exact and which sampled
            more += f"\n[dim]{esc(_basis_line(rep))}[/]"
        if self.preliminary is not None:
            more += f"  [black on yellow] preliminary: {self.preliminary:.0%} ingested [/]"
        if self.live is not None:
            prom = self.live.get("prometheus", "off")
            style = "red" if prom.startswith("stale") else "dim"
            where = f" · snapshot {self.live['scrub']} (p: resume)" if self.live.get("scrub") else ""
            settling = self.live.get("settling") or {}
            if settling.get("spans"):
                where += f" · {settling['traces']:,} traces settling ({settling['settle_s']:.0f}s)"
            more += f"\n[dim]LIVE · window {self.live['window_s']:.0f}s · at {self.live['at']}{where}[/] · [{style}]prometheus {esc(prom)}[/]"
        summary.update(
            f"[b]{esc(route)}[/]{more}\n" + (
                f"{lat['requests']:,} requests · errors {lat['error_rate']:.2%} · "
                f"p50 [b]{lat['p50_ms']:.1f}[/] · p95 [b]{lat['p95_ms']:.1f}[/] · p99 [b]{lat['p99_ms']:.1f}[/] ms"
                if lat else "no request of this route matches the filter"))
        actionable = [f for f in rep["findings"] if f["severity"] != "info"]
        top = self.query_one("#top-finding", Static)
        if actionable:
            f = actionable[0]
            extra = f"  [dim](+{len(actionable) - 1} more: press f)[/]" if len(actionable) > 1 else "  [dim](f: details)[/]"
            top.update(f"{badge(f['severity'])} [b]{f['rule']}[/] {esc(f['summary'])}{extra}")
        else:
            top.update("[green]No warning or critical findings.[/]")
        self.query_one("#plot", LatencyPlot).show(series, "latency over time (ms)")
        table = self.query_one("#stages", DataTable)
        table.clear()
        for stage, d in sorted(stages.items(), key=lambda kv: -kv[1]["p95_share"]):
            table.add_row(stage, share_bar(d["p95_share"]), f"{d['p95_share']:.0%}", f"{d['p50_ms']:.1f}",
                          f"{d['p95_ms']:.1f}", key=stage)


def _basis_line(rep: dict) -> str:
    """For a trace backend's input: where the figures come from, which are exact and at what sampling rate."""
    from triage.collectors.backends.figures import describe

    srcs, latency, detail = describe(rep)
    return f"SOURCE {srcs} · latency {latency.split(' (')[0]} · stages and findings {detail}"
