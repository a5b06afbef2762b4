"""Run the analysis: stages, then every registered rule; order findings most important first."""
from __future__ import annotations

import traceback

from triage.collectors.metric_catalogue import CATALOGUE

from . import constraints as constraints_mod
from . import impact, latency, llm, stages
from .constraints import Constraints
from .finding import Finding
from .rule import Available, Context
from .rules import RULES, default_thresholds, threshold_units


def load_constraints(paths, explicit=None) -> Constraints:
    """The constraints (triage.toml) for a capture: ``explicit`` or the one next to ``paths``, with every
    rule's default thresholds."""
    return constraints_mod.find(paths, explicit, default_thresholds(), threshold_units())


def prepare(store, constraints: Constraints) -> None:
    """Build the derived tables the rules read (stage attribution, requests)."""
    stages.build(store, tuple(constraints.stage_rules) + stages.DEFAULT_RULES)


def metrics_read(rules=RULES) -> tuple[str, ...]:
    """Every catalogue metric the rules and the report read (what live mode queries), in catalogue order."""
    names = set(llm.METRICS).union(*(r.metrics for r in rules))
    return tuple(n for n in CATALOGUE if n in names)


def relations(rules=RULES) -> tuple[tuple[str, str, str], ...]:
    """(cause, symptom, why), as each rule declares them (``Rule.causes``)."""
    return tuple((r.id, down, why) for r in rules for down, why in r.causes)


def _same_scope(a: Finding, b: Finding) -> bool:
    ra, rb = a.scope.get("route"), b.scope.get("route")
    return ra is None or rb is None or ra == rb


def relate(findings: list[Finding], explains_share: float = 0.25, rules=RULES) -> list[Finding]:
    """Order by severity, then saving; mark a symptom as likely caused by a firing cause, and put the cause
    first, only where the cause's saving explains a material part (``explains_share``) of the symptom's."""
    ordered = sorted(findings, key=Finding.sort_key)
    firing = [f for f in ordered if f.evaluated and f.severity in ("critical", "warning")]
    for up, down, why in relations(rules):
        for s in [f for f in firing if f.rule == down]:
            causes = [c for c in firing if c.rule == up and _same_scope(c, s)
                      and c.impact_ms >= explains_share * s.impact_ms]
            if not causes:
                continue
            cause = max(causes, key=lambda c: c.impact_ms)
            s.evidence["likely_caused_by"] = {"rule": up, "why": why,
                                              "explains_share": round(cause.impact_ms / s.impact_ms, 3)
                                              if s.impact_ms else None}
            i_s, i_c = ordered.index(s), ordered.index(cause)
            if i_c > i_s:
                ordered.insert(i_s, ordered.pop(i_c))
    return ordered


def run_rules(store, constraints: Constraints, rules=RULES) -> list[Finding]:
    ctx = Context(store=store, constraints=constraints, window=latency.window(store), available=Available.of(store))
    findings: list[Finding] = []
    for rule in rules:
        try:
            findings.extend(rule.run(ctx))
        except Exception as exc:  # one broken rule must not hide the others' findings, nor pass a gate
            findings.append(Finding(rule=rule.id, severity="error", title=f"{rule.title}: rule failed",
                                    summary=f"The rule raised {type(exc).__name__}: {exc}",
                                    evidence={"traceback": traceback.format_exc(limit=3)}, evaluated=False))
    impact.assess(findings, store, constraints, {r.id: r for r in rules})
    return relate(findings, constraints.severity["cause_explains_share"], rules)
