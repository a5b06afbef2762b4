"""The one-key model fix: a preview (what will change, expected effect, risk, guardrails) to confirm,
progress while the worker builds and verifies the candidate, then a before/after card."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..format import esc


class PreviewScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Apply"), Binding("n", "answer(False)", "Cancel"),
                Binding("escape", "answer(False)", "Cancel", show=False)]

    def __init__(self, plan: dict, finding: dict) -> None:
        super().__init__()
        self.plan, self.finding = plan, finding

    def compose(self) -> ComposeResult:
        p = self.plan
        g = ", ".join(f"{k} {v}" for k, v in p["guardrails"].items())
        text = "\n".join([
            f"[b]Apply: {p['mode']} quantization[/]  [dim](for {self.finding['rule']})[/]", "",
            f"[b]What changes[/]  {esc(p['what_changes'])}",
            f"[b]Expected[/]      {esc(p['expected_effect'])}",
            f"[b]Risk[/]          {p['risk']}/5 — the original stays; rollback removes the new version exactly",
            f"[b]Guardrails[/]    {esc(g)} (not applied if any fails)",
            f"[b]Checks[/]        runs on shapes {', '.join('x'.join(map(str, s)) for s in p['shapes'])}; "
            f"agreement on {esc(p['calibration'])}; p50/p95/p99 with {p['threads']} thread(s)",
            *(f"[yellow]{esc(n)}[/]" for n in p["notes"]),
            "", "[b]y[/] apply   [b]n[/] / Esc cancel"])
        with VerticalScroll(id="modal-box"):
            yield Static(text)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ResultScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "close", show=False)]

    def __init__(self, result: dict) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        r = self.result
        v = r.get("verification", {})
        lines = [f"[b]{'Applied' if r.get('applied') else 'Not applied'}[/]: {r['plan']['mode']} — "
                 f"{esc(r['plan']['what_changes'])}", ""]
        if v.get("before") and v.get("after"):
            b, a = v["before"], v["after"]
            lines += [f"{'':<12}{'before':>12}{'after':>12}",
                      *(f"{label:<12}{b[k]:>12.3f}{a[k]:>12.3f}" for label, k in
                        (("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"), ("p99 ms", "p99_ms"))),
                      f"{'per second':<12}{b['throughput_per_s']:>12.0f}{a['throughput_per_s']:>12.0f}",
                      f"{'size MB':<12}{b['size_bytes'] / 1e6:>12.2f}{a['size_bytes'] / 1e6:>12.2f}", "",
                      f"p95 speedup {v.get('speedup_p95')}x · top-1 agreement {v['top1_agreement']:.2%} · "
                      f"max abs diff {v['max_abs_diff']:.4f}"]
        if r.get("applied"):
            lines += ["", f"Ledger id [b]{r['ledger_id']}[/] — press [b]u[/] on the findings screen to roll back."]
        else:
            lines += ["", f"[red]{esc(r.get('reason'))}[/]"]
        lines += ["", "[dim]Enter / Esc to close[/]"]
        with VerticalScroll(id="modal-box"):
            yield Static("\n".join(lines))

    def action_close(self) -> None:
        self.dismiss(None)
