"""The rule contract: metadata, default thresholds with units, what the rule ``requires`` to be evaluated,
how its severity is set, which rules' findings it can cause, a doc (what / why / fix) and a pure
``detect(ctx) -> list[Finding]``.

``requires`` is a tuple of alternatives (``Need``); the rule is evaluated when at least one alternative is
wholly present in the capture, otherwise the engine reports "not evaluated: why" from the first
alternative's missing parts, without running the rule. A rule can still find present data unusable (too
few requests, no finite samples) and say so itself.

``metrics`` declares every metric the rule reads (its ``detect`` and the helpers it calls), by name from the
one catalogue (``collectors.metric_catalogue``); the metrics named in ``requires`` are among them. Live mode
queries the union of the registered rules' declarations (``engine.metrics_read``), so a metric a rule reads
cannot be missing there."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from triage.collectors.metric_catalogue import CATALOGUE

from .constraints import Constraints
from .finding import Finding


@dataclass(frozen=True)
class Threshold:
    default: float
    unit: str
    meaning: str


@dataclass(frozen=True)
class Need:
    """One way a rule can be evaluated: every part named here must be present."""
    stages: tuple[str, ...] = ()       # any of these stages has time in request_stages
    metrics: tuple[str, ...] = ()      # any of these metric families has samples
    client_spans: bool = False         # CLIENT spans (calls to other services) in the traces
    requests: bool = False             # requests in the traces
    error_spans: bool = False          # spans with an error status
    constraints: tuple[str, ...] = ()  # triage.toml "section" (non-empty) or "section.key", all of them
    what: str = ""                     # how to name the metrics in "not evaluated" (e.g. "GPU utilization metrics")

    def missing(self, have: "Available", constraints: Constraints) -> list[str]:
        out = []
        if self.stages and not set(self.stages) & have.stages:
            out.append(f"no {' or '.join(self.stages)} time in the traces")
        if self.metrics and not set(self.metrics) & have.metrics:
            out.append(f"no {self.what or 'metrics'} ({', '.join(self.metrics)})")
        if self.client_spans and not have.client_spans:
            out.append("no CLIENT spans in the traces")
        if self.requests and not have.requests:
            out.append("no requests in the traces")
        if self.error_spans and not have.error_spans:
            out.append("no spans with an error status")
        absent = []
        for key in self.constraints:
            section, _, name = key.partition(".")
            value = getattr(constraints, section, {}) or {}
            if not (value.get(name) if name else value):
                absent.append(f"[{section}] {name}".strip() if name else f"[{section}]")
        if absent:
            out.append(f"no {' and '.join(absent)} in triage.toml")
        return out


@dataclass(frozen=True)
class Available:
    """What a capture holds, asked once per analysis for every rule's ``requires``."""
    stages: frozenset
    metrics: frozenset
    client_spans: bool
    requests: bool
    error_spans: bool

    @staticmethod
    def of(store) -> "Available":
        return Available(
            stages=frozenset(r[0] for r in store.query("SELECT DISTINCT stage FROM request_stages WHERE ns > 0")),
            metrics=frozenset(r[0] for r in store.query("SELECT DISTINCT metric FROM samples")),
            client_spans=bool(store.scalar("SELECT count(*) > 0 FROM spans WHERE kind = 3")),
            requests=bool(store.scalar("SELECT count(*) > 0 FROM requests")),
            error_spans=bool(store.scalar("SELECT count(*) > 0 FROM spans WHERE status_code = 2")))


@dataclass
class Context:
    store: object
    constraints: Constraints
    window: tuple[int | None, int | None]
    available: Available | None = None


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
    requires: tuple[Need, ...] = ()   # alternatives; empty: always evaluated
    metrics: tuple[str, ...] = ()     # every catalogue metric the rule reads

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in CATALOGUE]
        undeclared = [m for n in self.requires for m in n.metrics if m not in self.metrics]
        if unknown or undeclared:
            raise ValueError(f"rule {self.id}: metrics not in the catalogue {unknown}, required but not declared "
                             f"{undeclared}")

    def unmet(self, ctx: Context) -> str | None:
        """None when one alternative of ``requires`` is present, else why the rule cannot be evaluated."""
        if not self.requires or ctx.available is None:
            return None
        gaps = [n.missing(ctx.available, ctx.constraints) for n in self.requires]
        if any(not g for g in gaps):
            return None
        return ", ".join(" and ".join(g) for g in gaps)

    def run(self, ctx: Context) -> list[Finding]:
        why = self.unmet(ctx)
        if why:
            from .finding import not_evaluated

            return [not_evaluated(self.id, self.title, why)]
        th = {k: ctx.constraints.threshold(self.id, k, t.default) for k, t in self.thresholds.items()}
        return self.detect(ctx, th)
