"""The rule contract: metadata, default thresholds with units, a doc (what / why / fix) and a pure
``detect(ctx) -> list[Finding]``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .constraints import Constraints
from .finding import Finding


@dataclass(frozen=True)
class Threshold:
    default: float
    unit: str
    meaning: str


@dataclass
class Context:
    store: object
    constraints: Constraints
    window: tuple[int | None, int | None]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    category: str
    thresholds: dict[str, Threshold]
    doc: str
    detect: Callable[["Context", dict], list[Finding]]

    def run(self, ctx: Context) -> list[Finding]:
        th = {k: ctx.constraints.threshold(self.id, k, t.default) for k, t in self.thresholds.items()}
        return self.detect(ctx, th)
