"""TUI response times (issue 17): first paint, and the requests table's sort and filter on a large capture.

    python -m benchmarks.tui [--spans 600000] [--repeat 5]

- first paint: wall time from starting a fresh Python process to the app's first frame (headless, the
  overview's "Loading…"), and to the first frame showing the analysed bundled sample (slow-tokenizer);
- sort / filter: on a generated capture (benchmarks/capture.py, 6 spans per request), the work the requests
  screen's worker does for one keystroke — count + one page ORDER BY the column — and the
  widget's refill with those rows (a Textual DataTable, headless), median of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
from triage.tui.app import TriageApp
from triage.tui.messages import AnalysisReady

def mark(line):  # Textual owns stdout and stderr while it runs
    with open(sys.argv[2], "a") as fh:
        fh.write(line + "\n")

class Timed(TriageApp):
    first = None
    def on_mount(self):  # Textual runs TriageApp.on_mount too (handlers run along the MRO)
        self.call_after_refresh(self._painted)
    def _painted(self):
        mark(f"first-frame {time.time()}")
    def on_analysis_ready(self, msg):
        if msg.preliminary is None:
            self.call_after_refresh(self._done)
    def _done(self):
        mark(f"analysed-frame {time.time()}")
        self.exit()

Timed(paths=[sys.argv[1]]).run(headless=True, size=(80, 24))
"""


def first_paint(sample: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        marks_file = Path(tmp) / "marks"
        t0 = time.time()
        subprocess.run([sys.executable, "-c", CHILD, str(sample), str(marks_file)], capture_output=True, env=env,
                       timeout=120, cwd=ROOT, check=True)
        out = marks_file.read_text()
    marks = dict(line.split() for line in out.splitlines() if line.startswith(("first-frame", "analysed-frame")))
    return float(marks["first-frame"]) - t0, float(marks["analysed-frame"]) - t0


def table_fill_ms(rows: list[dict]) -> float:
    """Median time to clear and refill the requests DataTable with one page, headless."""
    import asyncio

    from textual.app import App
    from textual.widgets import DataTable

    from triage.analyzers.requests import COLUMN_NAMES
    from triage.tui.screens.requests import RequestsScreen

    cells = RequestsScreen._cells
    shim = type("S", (), {"origin": rows[0]["start_ns"]})()
    times = []

    class A(App):
        def compose(self):
            yield DataTable()

    async def go():
        app = A()
        async with app.run_test(size=(80, 24)) as pilot:
            t = app.query_one(DataTable)
            t.add_columns(*COLUMN_NAMES)
            for _ in range(5):
                t0 = time.perf_counter()
                t.clear()
                for i, r in enumerate(rows):
                    t.add_row(*cells(shim, r), key=str(i))
                await pilot.pause()
                times.append((time.perf_counter() - t0) * 1e3)

    asyncio.run(go())
    return statistics.median(times)


def big_trace(tmp: Path, repeat: int) -> None:
    """Opening a 10,000-span trace: the trace screen's worker (load from the store, tree, exclusive times,
    critical path)."""
    import json

    from triage.analyzers import trace as tr
    from triage.sessions.offline import analyze

    tid, t0 = "ab" * 16, 1_796_029_103_000_000_000
    spans = [tr.Span(tid, "%016x" % 1, None, "gw", "POST /big", 2, t0, t0 + 10_000_000)]
    spans += [tr.Span(tid, "%016x" % (i + 2), "%016x" % (1 if i % 10 == 0 else i - i % 10 + 2), "gw", f"step {i}", 1,
                      t0 + i * 1000, t0 + i * 1000 + 900) for i in range(9_999)]
    path = tmp / "big-trace.json"
    path.write_text(json.dumps(tr.to_otlp(tr.build(tid, spans))))
    store = analyze([str(path)]).store
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        trace = tr.load(store, tid)
        ts.append((time.perf_counter() - t) * 1e3)
    print(f"open a {len(trace.spans):,}-span trace (load + tree + exclusive times + critical path): "
          f"median {statistics.median(ts):.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=600_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))

    paints = [first_paint(ROOT / "sample_traces" / "slow-tokenizer") for _ in range(3)]
    print(f"first frame (process start → Loading… frame): median {statistics.median(p[0] for p in paints):.2f} s "
          f"({', '.join(f'{p[0]:.2f}' for p in paints)})")
    print(f"analysed frame (process start → overview of the sample): median "
          f"{statistics.median(p[1] for p in paints):.2f} s ({', '.join(f'{p[1]:.2f}' for p in paints)})")

    from triage.analyzers import requests as rq
    from triage.sessions.offline import analyze
    from benchmarks.capture import write_capture
    from triage.tui.screens.requests import PAGE

    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "cap.jsonl"
        n = write_capture(cap, args.spans)
        t0 = time.perf_counter()
        a = analyze([str(cap)])
        t_an = time.perf_counter() - t0
        store = a.store
        t0 = time.perf_counter()
        rq.materialize(store)
        t_mat = time.perf_counter() - t0
        total = rq.count(store)
        print(f"capture: {n:,} spans, {total:,} requests; analysis {t_an:.1f} s; request_rows built in "
              f"{t_mat * 1e3:.0f} ms (once per analysis)")

        def timed(fn) -> float:
            ts = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t) * 1e3)
            return statistics.median(ts)

        print("| keystroke | query (count + one page) ms, median |")
        print("|---|---:|")
        for col in ("e2e_ms", "start", "route", "queue", "input", "trace_id"):
            ms = timed(lambda c=col: (rq.count(store), rq.page(store, None, c, True, 0, PAGE)))
            print(f"| sort by {col} | {ms:.0f} |")
        ms = timed(lambda: (rq.count(store), rq.page(store, None, "e2e_ms", True, total // 2, PAGE)))
        print(f"| scroll to the middle (OFFSET {total // 2:,}) | {ms:.0f} |")
        for text in ("duration>30ms", "stage.queue>10ms status=ok", "route~classify input>=128",
                     "attr.app.input_tokens=512"):
            f = rq.compile_filter(text)
            ms = timed(lambda f=f: (rq.count(store, f), rq.page(store, f, "e2e_ms", True, 0, PAGE)))
            print(f"| filter `{text}` ({rq.count(store, f):,} rows) | {ms:.0f} |")
        big_trace(Path(tmp), args.repeat)
        rows = rq.page(store, None, "e2e_ms", True, 0, PAGE)
        print(f"DataTable refill with one window of {PAGE} rows (headless): {table_fill_ms(rows):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
