"""One analysis session: ingest paths into a store, prepare stages, run rules, build the report.
Shared by the CLI and the TUI so both see the same numbers."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from triage.collectors.ingest import IngestResult, Progress, ingest_paths
from triage.collectors.store import Store

from triage.analyzers import constraints as constraints_mod
from triage.analyzers import engine, report
from triage.analyzers.engine import load_constraints
from triage.analyzers.finding import Finding


@dataclass
class Analysis:
    store: Store
    constraints: constraints_mod.Constraints
    ingest: IngestResult
    findings: list[Finding] = field(default_factory=list)

    def report(self) -> dict:
        return report.build(self.store, self.ingest, self.findings, self.constraints)


Preliminary = Callable[[Analysis, float], None]


def analyze(paths: list[str | Path], db: str | None = None, constraints_file: str | None = None,
            progress: Progress | None = None, constraints: constraints_mod.Constraints | None = None,
            preliminary: Preliminary | None = None, preliminary_after_s: float = 0.3) -> Analysis:
    """Ingest, attribute stages, run every rule. With ``preliminary``, a large capture also gets one early
    analysis of what has been ingested so far (after ``preliminary_after_s`` seconds), handed over with the
    fraction of bytes read: the on-call engineer sees a first answer while the rest loads."""
    cons = constraints or load_constraints(paths, constraints_file)
    store = Store(db)
    t0 = time.monotonic()
    fired = False

    def on_progress(done: int, total: int, path: str) -> None:
        nonlocal fired
        if progress:
            progress(done, total, path)
        if (preliminary and not fired and 0 < done < total and time.monotonic() - t0 >= preliminary_after_s
                and store.scalar("SELECT count(*) FROM spans")):
            fired = True
            engine.prepare(store, cons)
            early = IngestResult(files=store.scalar("SELECT count(*) FROM inputs WHERE complete"))
            preliminary(Analysis(store, cons, early, engine.run_rules(store, cons)), done / total)

    result = ingest_paths(store, paths, on_progress if (progress or preliminary) else None)
    engine.prepare(store, cons)
    findings = engine.run_rules(store, cons)
    return Analysis(store=store, constraints=cons, ingest=result, findings=findings)
