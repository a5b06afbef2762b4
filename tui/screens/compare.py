"""Compare: two captures, before and after a change, as ``triage compare`` sees them (analyzers/compare.py's
``compare_analyses``, run by the app's worker; this screen only renders the result it is handed). Per route:
p50/p95/p99 before → after with the change and its bootstrap CI, the verdict; each stage's p95 change, largest
first; the p95 change split into mix and per-request speed; the findings that appeared or went away."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ..format import badge, esc

VERDICT_STYLE = {"regressed": "bold red", "improved": "bold green", "no significant change": "dim"}
VERDICT_WORD = {"regressed": "SLOWER", "improved": "FASTER", "no significant change": "not sig."}


def verdict(v: str) -> str:
    return f"[{VERDICT_STYLE.get(v, '')}]{VERDICT_WORD.get(v, esc(v))}[/]"


def ci(c: dict) -> str:
    return f"[{c['ci_ms'][0]:+.1f}, {c['ci_ms'][1]:+.1f}]"


class CompareScreen(Screen):
    BINDINGS = [
        Binding("right_square_bracket", "route(1)", "Next route"),
        Binding("left_square_bracket", "route(-1)", "Prev route"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: dict | None = None
        self.before = self.after = ""
        self.route_index = 0
        self.state = ("[dim]No comparison yet: [b]:compare DIR[/] compares the capture in DIR (before) with this "
                      "one (after); [b]triage compare BEFORE AFTER[/] opens here.[/]")

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="compare-scroll"):
            yield Static(self.state, id="compare-summary")
            yield DataTable(id="compare-latency", cursor_type="none", zebra_stripes=True)
            yield DataTable(id="compare-stages", cursor_type="none", zebra_stripes=True)
            yield Static("", id="compare-mix")
            yield Static("", id="compare-findings")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#compare-latency", DataTable).add_columns("", "before ms", "after ms", "change ms",
                                                                  "95% CI ms", "change %", "verdict")
        self.query_one("#compare-stages", DataTable).add_columns("stage", "p50 ms", "p95 ms", "p95 change",
                                                                 "95% CI ms", "verdict")
        self._fill()

    def pending(self, before: str, after: str) -> None:
        """The worker is comparing ``before`` with ``after``."""
        self.result, self.before, self.after = None, before, after
        self._set_state(f"Comparing [b]{esc(before)}[/] (before) with [b]{esc(after)}[/] (after)…")

    def failed(self, error: str) -> None:
        self.result = None
        self._set_state(f"[red]Could not compare: {esc(error)}[/]")

    def show(self, result: dict, before: str, after: str) -> None:
        """Render a ``compare_analyses`` result."""
        self.result, self.before, self.after = result, before, after
        self.route_index = 0
        if self.is_mounted:
            self._fill()

    def _set_state(self, text: str) -> None:
        self.state = text
        if self.is_mounted:
            self._fill()

    @property
    def routes(self) -> list[str]:
        return list(self.result["routes"]) if self.result else []

    def action_route(self, step: int) -> None:
        if self.routes:
            self.route_index = (self.route_index + step) % len(self.routes)
            self._fill()

    def _fill(self) -> None:
        summary = self.query_one("#compare-summary", Static)
        widgets = [self.query_one(w) for w in ("#compare-latency", "#compare-stages", "#compare-mix",
                                               "#compare-findings")]
        if not self.routes:
            text = self.state
            if self.result is not None:
                text = (f"No route in both captures. Only before: {esc(', '.join(self.result['only_before']) or '-')}"
                        f"; only after: {esc(', '.join(self.result['only_after']) or '-')}")
            summary.update(text)
            for w in widgets:
                w.display = False
            return
        for w in widgets:
            w.display = True
        res = self.result
        route = self.routes[self.route_index]
        e = res["routes"][route]
        c = e["change"]["p95"]
        counts = {v: sum(r["verdict"] == v for r in res["routes"].values()) for v in VERDICT_WORD}
        more = ""
        if len(self.routes) > 1:
            more = (f"  [dim]route {self.route_index + 1}/{len(self.routes)} ([ ]) · "
                    + ", ".join(f"{n} {VERDICT_WORD[v].lower()}" for v, n in counts.items() if n) + "[/]")
        slo = ""
        if "slo" in e:
            s = e["slo"]
            slo = (f" · SLO {'met' if s['met_before'] else '[red]missed[/]'} → "
                   f"{'met' if s['met_after'] else '[red]missed[/]'}")
        summary.update(
            f"[dim]{esc(self.before)} → {esc(self.after)}[/]\n"
            f"[b]{esc(route)}[/]{more}\n"
            f"p95 {verdict(e['verdict'])} {c['ms']:+.1f} ms ({c['pct']:+.1f}%), 95% CI {ci(c)} ms · "
            f"{e['before']['requests']:,} → {e['after']['requests']:,} requests{slo}")
        lat = self.query_one("#compare-latency", DataTable)
        lat.clear()
        for name in ("p50", "p95", "p99"):
            ch = e["change"][name]
            v = "regressed" if ch["ci_ms"][0] > 0 else "improved" if ch["ci_ms"][1] < 0 else "no significant change"
            lat.add_row(name, f"{e['before'][f'{name}_ms']:.1f}", f"{e['after'][f'{name}_ms']:.1f}",
                        f"{ch['ms']:+.1f}", ci(ch), f"{ch['pct']:+.1f}%", verdict(v))
        stages = self.query_one("#compare-stages", DataTable)
        stages.clear()
        st = res.get("stages", {}).get(route, {}).get("stages", {})
        for stage, s in sorted(st.items(), key=lambda kv: -abs(kv[1]["change"]["p95"]["ms"])):
            ch = s["change"]["p95"]
            stages.add_row(esc(stage), f"{s['before']['p50_ms']:.1f} → {s['after']['p50_ms']:.1f}",
                           f"{s['before']['p95_ms']:.1f} → {s['after']['p95_ms']:.1f}", f"{ch['ms']:+.1f}", ci(ch),
                           verdict(s["verdict"]))
        self.query_one("#compare-mix", Static).update(self._mix(res.get("mix", {}).get(route)))
        self.query_one("#compare-findings", Static).update(self._findings(res.get("findings")))

    @staticmethod
    def _mix(m: dict | None) -> str:
        if not m:
            return ""
        if "speed" not in m:
            return f"[b]Mix or speed[/] {esc(m.get('note', ''))}"
        unmatched = (f", {m['unmatched_before_share']:.0%} of before traffic unmatched"
                     if m["unmatched_before_share"] else "")
        return (f"[b]Mix or speed[/] p95 {m['p95_change_ms']:+.1f} ms = mix {m['mix']['ms']:+.1f} {ci(m['mix'])} "
                f"+ per-request speed {m['speed']['ms']:+.1f} {ci(m['speed'])} ms [dim]({m['strata']} strata{unmatched})[/]")

    @staticmethod
    def _findings(f: dict | None) -> str:
        if f is None:
            return ""
        rows = ([f"[b]appeared[/] {badge(x['severity'])} {esc(x['rule'])}" for x in f["appeared"]] +
                [f"[b]went away[/] {badge(x['severity'])} {esc(x['rule'])}" for x in f["went_away"]] +
                [f"[b]severity[/] {esc(x['rule'])} {x['before']} → {x['after']}" for x in f["severity_changed"]] +
                [f"[dim]still there {x['severity']} {esc(x['rule'])}[/]" for x in f["unchanged"]])
        return "[b]Findings[/] (warning and above)\n" + ("\n".join(rows) if rows else "[dim]none before or after[/]")
