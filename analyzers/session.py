"""One analysis session: ingest paths into a store, prepare stages, run rules, build the report.
Shared by the CLI and the TUI so both see the same numbers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collectors.ingest import IngestResult, Progress, ingest_paths
from collectors.store import Store

from . import constraints as constraints_mod
from . import engine, report
from .finding import Finding
from .rules import default_thresholds


@dataclass
class Analysis:
    store: Store
    constraints: constraints_mod.Constraints
    ingest: IngestResult
    findings: list[Finding] = field(default_factory=list)

    def report(self) -> dict:
        return report.build(self.store, self.ingest, self.findings)


def load_constraints(paths, explicit=None) -> constraints_mod.Constraints:
    return constraints_mod.find(paths, explicit, default_thresholds())


def analyze(paths: list[str | Path], db: str | None = None, constraints_file: str | None = None,
            progress: Progress | None = None, constraints: constraints_mod.Constraints | None = None) -> Analysis:
    cons = constraints or load_constraints(paths, constraints_file)
    store = Store(db)
    result = ingest_paths(store, paths, progress)
    engine.prepare(store, cons)
    findings = engine.run_rules(store, cons)
    return Analysis(store=store, constraints=cons, ingest=result, findings=findings)
