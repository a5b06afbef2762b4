"""The service's constraints (``triage.toml``): SLOs, latency budget, cost, guardrails, scorecard weights,
stage overrides and rule threshold overrides. Defaults apply when the file is absent.

Validation: an unknown key or a wrong type is a ``ConstraintsError`` naming the key and its line.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .stages import STAGES, StageRule

FILENAME = "triage.toml"
NUM = (int, float)

SCHEMA: dict[str, dict[str, tuple]] = {
    "slo": {"p50_ms": NUM, "p95_ms": NUM, "p99_ms": NUM, "error_rate": NUM, "window": (str,), "owner": (str,)},
    "budget": {"total_ms": NUM, "headroom_ms": NUM, "owner": (str,), **{f"{s}_ms": NUM for s in STAGES}},
    "cost": {"cap_per_1000_calls": NUM, "accelerator_price_per_hour": NUM, "accelerators": NUM,
             "currency": (str,), "owner": (str,)},
    "guardrails": {"max_accuracy_drop": NUM, "min_top1_agreement": NUM, "max_abs_diff": NUM,
                   "max_error_rate": NUM, "owner": (str,)},
    "scorecard": {"impact": NUM, "feasibility": NUM, "risk": NUM},
}


class ConstraintsError(ValueError):
    pass


@dataclass
class Constraints:
    slo: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    guardrails: dict = field(default_factory=lambda: {"min_top1_agreement": 0.99, "max_error_rate": 0.01})
    scorecard: dict = field(default_factory=lambda: {"impact": 0.5, "feasibility": 0.3, "risk": 0.2})
    stage_rules: tuple[StageRule, ...] = ()
    rules: dict[str, dict] = field(default_factory=dict)
    path: str | None = None

    def threshold(self, rule_id: str, name: str, default):
        return self.rules.get(rule_id, {}).get(name, default)


def _line_of(text: str, key: str) -> int | None:
    pat = re.compile(r"^\s*(\[\s*)?(\"?)" + re.escape(key.split(".")[-1]) + r"\2\s*(=|\])", re.M)
    m = pat.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _err(text: str, path: str, key: str, msg: str) -> ConstraintsError:
    line = _line_of(text, key)
    return ConstraintsError(f"{path}:{line or '?'}: {key}: {msg}")


def load(path: str | Path, known_rules: dict[str, dict] | None = None) -> Constraints:
    """Parse and validate a triage.toml. ``known_rules`` maps rule id → its default thresholds."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConstraintsError(f"{p}: {exc}") from exc
    c = Constraints(path=str(p))
    for section, value in doc.items():
        if section in SCHEMA:
            if not isinstance(value, dict):
                raise _err(text, str(p), section, "must be a table")
            for k, v in value.items():
                allowed = SCHEMA[section].get(k)
                if allowed is None:
                    raise _err(text, str(p), f"{section}.{k}", f"unknown key (allowed: {', '.join(SCHEMA[section])})")
                if not isinstance(v, allowed) or isinstance(v, bool):
                    raise _err(text, str(p), f"{section}.{k}", f"expected {allowed[0].__name__}, got {type(v).__name__}")
            getattr(c, section).update(value)
        elif section == "stages":
            rules = []
            for pattern, stage in value.items():
                if stage not in STAGES:
                    raise _err(text, str(p), f"stages.{pattern}", f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise _err(text, str(p), f"stages.{pattern}", f"invalid pattern: {exc}") from exc
                rules.append(StageRule(pattern.lower(), stage))
            c.stage_rules = tuple(rules)
        elif section == "rules":
            for rid, overrides in value.items():
                if known_rules is not None and rid not in known_rules:
                    raise _err(text, str(p), f"rules.{rid}", f"unknown rule (known: {', '.join(sorted(known_rules))})")
                for k, v in overrides.items():
                    defaults = (known_rules or {}).get(rid, {})
                    if known_rules is not None and k not in defaults:
                        raise _err(text, str(p), f"rules.{rid}.{k}", f"unknown threshold (known: {', '.join(defaults)})")
                    if not isinstance(v, NUM) or isinstance(v, bool):
                        raise _err(text, str(p), f"rules.{rid}.{k}", f"expected a number, got {type(v).__name__}")
                c.rules[rid] = dict(overrides)
        else:
            raise _err(text, str(p), section, "unknown section (allowed: slo, budget, cost, guardrails, scorecard, stages, rules)")
    return c


def find(paths: list[str | Path], explicit: str | Path | None, known_rules: dict[str, dict] | None = None) -> Constraints:
    """The constraints in force: ``--constraints FILE``, else a triage.toml next to the capture, else defaults."""
    if explicit:
        return load(explicit, known_rules)
    for p in paths:
        p = Path(p)
        candidate = (p if p.is_dir() else p.parent) / FILENAME
        if candidate.is_file():
            return load(candidate, known_rules)
    return Constraints()
