"""What a rule returns. Rules return data; the TUI and the report decide how to show it."""
from __future__ import annotations

from dataclasses import dataclass, field

# error: the rule itself raised, so its question went unanswered; shown before everything else
SEVERITY_RANK = {"error": 0, "critical": 1, "warning": 2, "info": 3}


@dataclass
class Finding:
    rule: str
    severity: str                 # error (the rule raised) | critical | warning | info
    title: str
    summary: str                  # one sentence, with numbers
    scope: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)
    confidence: float = 0.0
    remediations: list[dict] = field(default_factory=list)
    impact_ms: float = 0.0        # estimated p95 reduction if fixed; orders findings of equal severity
    evaluated: bool = True        # False for "not evaluated: why"

    def sort_key(self):
        return (SEVERITY_RANK.get(self.severity, 9), not self.evaluated, -self.impact_ms, self.rule)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "title": self.title, "summary": self.summary,
                "scope": self.scope, "evidence": self.evidence, "confidence": round(self.confidence, 3),
                "remediations": self.remediations}


def not_evaluated(rule_id: str, title: str, why: str) -> Finding:
    return Finding(rule=rule_id, severity="info", title=f"{title}: not evaluated",
                   summary=f"Not evaluated: {why}.", evidence={"reason": why}, evaluated=False)
