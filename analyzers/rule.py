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
    # "saving": severity follows from the finding's saving on p95 (analyzers/impact.py); "rule": the rule
    # reports a breached constraint (SLO, budget, cost, memory, clocks) and sets its own severity
    severity_from: str = "saving"
    # (symptom rule id, why): when both fire and this rule's saving explains a material part of the
    # symptom's, the symptom is marked as likely caused by this rule and ranked after it
    causes: tuple[tuple[str, str], ...] = ()

    def run(self, ctx: Context) -> list[Finding]:
        th = {k: ctx.constraints.threshold(self.id, k, t.default) for k, t in self.thresholds.items()}
        return self.detect(ctx, th)
