"""Run the analysis: stages, then every registered rule; order findings most important first."""
from __future__ import annotations

import traceback

from . import latency, stages
from .constraints import Constraints
from .finding import Finding
from .rule import Context
from .rules import RULES


def prepare(store, constraints: Constraints) -> None:
    """Build the derived tables the rules read (stage attribution, requests)."""
    stages.build(store, tuple(constraints.stage_rules) + stages.DEFAULT_RULES)


def run_rules(store, constraints: Constraints, rules=RULES) -> list[Finding]:
    ctx = Context(store=store, constraints=constraints, window=latency.window(store))
    findings: list[Finding] = []
    for rule in rules:
        try:
            findings.extend(rule.run(ctx))
        except Exception as exc:  # one broken rule must not hide the others' findings
            findings.append(Finding(rule=rule.id, severity="info", title=f"{rule.title}: rule failed",
                                    summary=f"The rule raised {type(exc).__name__}: {exc}",
                                    evidence={"traceback": traceback.format_exc(limit=3)}, evaluated=False))
    return sorted(findings, key=Finding.sort_key)
