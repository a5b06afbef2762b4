"""p50/p95/p99 over time for one route (textual-plotext)."""
from __future__ import annotations

from textual_plotext import PlotextPlot


class LatencyPlot(PlotextPlot):
    def show(self, buckets: list[dict], title: str) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if buckets:
            x = [b["t_s"] for b in buckets]
            for key, color in (("p50_ms", "green"), ("p95_ms", "orange"), ("p99_ms", "red")):
                plt.plot(x, [b[key] for b in buckets], label=key.replace("_ms", ""), color=color, marker="braille")
        plt.title(title)
        plt.xlabel("seconds since start")
        plt.ylabel("ms")
        self.refresh()
