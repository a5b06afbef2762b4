"""A trace waterfall that renders only the rows on screen (Textual's line API): 10k-span traces stay fast.

Each row: fold marker, critical-path mark, indented span name, exclusive ms, and a bar on the trace's time
axis coloured by the span's stage (a queue carved out of a span's own time, as Triton's, in the queue
colour). The critical path is marked with ``●`` and drawn with ``█`` (other spans ``▒``), so it reads
without colour too (NO_COLOR).
"""
from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

STAGE_COLOURS = {"preprocess": "yellow", "queue": "red", "inference": "green", "postprocess": "magenta",
                 "network": "blue", "request": "cyan", "other": "white", None: "bright_black"}
NAME_W, SELF_W = 34, 9


class Waterfall(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "move(-20)", "Page up", show=False),
        Binding("pagedown", "move(20)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("space", "fold", "Fold/unfold"),
        Binding("left,h", "fold(True)", "Fold", show=False),
        Binding("right,l", "fold(False)", "Unfold", show=False),
    ]
    cursor = reactive(0)

    class Selected(Message):
        def __init__(self, span) -> None:
            super().__init__()
            self.span = span

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.trace = None
        self.folded: set[str] = set()
        self.critical_only = False
        self.rows: list = []

    def show(self, trace) -> None:
        self.trace, self.folded, self.cursor = trace, set(), 0
        self._layout()

    def _layout(self) -> None:
        keep = self.rows[self.cursor].span_id if self.rows and self.cursor < len(self.rows) else None
        rows, stack = [], list(reversed(self.trace.roots)) if self.trace else []
        while stack:
            s = stack.pop()
            if self.critical_only and not s.critical_ns:
                continue
            rows.append(s)
            if s.span_id not in self.folded:
                stack.extend(reversed(s.children))
        self.rows = rows
        self.virtual_size = Size(NAME_W + SELF_W + 40, len(rows))
        ids = [r.span_id for r in rows]
        self.cursor = ids.index(keep) if keep in ids else min(self.cursor, max(0, len(rows) - 1))
        self.refresh()
        self._announce()

    def selected(self):
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def _announce(self) -> None:
        if self.selected() is not None:
            self.post_message(self.Selected(self.selected()))

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_region(self._row_region(new), animate=False, immediate=True) if self.rows else None
        self.refresh()

    def _row_region(self, row: int):
        from textual.geometry import Region

        return Region(0, row, 1, 1)

    def action_move(self, step: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + step))
            self._announce()

    def on_click(self, event) -> None:
        """Mouse: a click selects the row under it; a click on the fold marker folds or unfolds."""
        row = int(self.scroll_offset.y) + event.y
        if 0 <= row < len(self.rows):
            self.cursor = row
            self._announce()
            s = self.rows[row]
            if event.x == 2 * min(s.depth, 12) and s.children:
                self.action_fold()

    def action_first(self) -> None:
        self.action_move(-len(self.rows))

    def action_last(self) -> None:
        self.action_move(len(self.rows))

    def action_fold(self, fold: bool | None = None) -> None:
        s = self.selected()
        if s is None or not s.children:
            return
        if fold is None:
            fold = s.span_id not in self.folded
        (self.folded.add if fold else self.folded.discard)(s.span_id)
        self._layout()

    def toggle_critical(self) -> None:
        self.critical_only = not self.critical_only
        self._layout()

    def render_line(self, y: int) -> Strip:
        row = int(self.scroll_offset.y) + y
        width = self.size.width
        if not self.trace or row >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        s = self.rows[row]
        base = self.rich_style
        sel = Style(reverse=True) if row == self.cursor else Style()
        marker = ("▸" if s.span_id in self.folded else "▾") if s.children else " "
        crit = "●" if s.critical_ns else " "
        label = f"{'  ' * min(s.depth, 12)}{marker}{crit}{s.service}: {s.name}"
        label = (label[:NAME_W - 1] + "…") if len(label) > NAME_W else label.ljust(NAME_W)
        selfms = f"{s.self_ns / 1e6:8.2f} "
        bar_w = max(10, width - NAME_W - SELF_W)
        span_ns = max(1, self.trace.end_ns - self.trace.start_ns)
        b = int((s.b - self.trace.start_ns) * bar_w / span_ns)
        e = max(b + 1, int(round((s.e - self.trace.start_ns) * bar_w / span_ns)))
        e = min(e, bar_w)
        b = min(b, bar_w - 1)
        colour = Style(color=STAGE_COLOURS.get(s.stage, "white"))
        ch = "█" if s.critical_ns else "▒"
        bar = [(b, e, colour)]
        if s.queue_ns:  # the queue carved out of this span's own time (Triton: QUEUE_START → COMPUTE_START)
            q0 = max(s.b, next((ts for n, ts, _ in s.events if n == "QUEUE_START"), s.b))
            qb = min(e, max(b, int((q0 - self.trace.start_ns) * bar_w / span_ns)))
            qe = min(e, max(qb + 1, int(round((q0 + s.queue_ns - self.trace.start_ns) * bar_w / span_ns))))
            bar = [(b, qb, colour), (qb, qe, Style(color=STAGE_COLOURS["queue"])), (qe, e, colour)]
        segs = [Segment(label, base + sel + Style(bold=bool(s.critical_ns))),
                Segment(selfms, base + sel),
                Segment(" " * b, base)]
        segs += [Segment(ch * (y - x), base + st) for x, y, st in bar if y > x]
        segs.append(Segment(" " * (bar_w - e), base))
        return Strip(segs).crop_extend(0, width, base)
