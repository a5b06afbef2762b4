"""The service's constraints (``triage.toml``): SLOs, latency budget, cost, guardrails, scorecard weights,
stage overrides and rule threshold overrides. Defaults apply when the file is absent.

Validation: every key has a type and a valid range from what it means (a latency is > 0 ms, an error rate
is in [0, 1), a share in [0, 1], ...; ``nan`` and ``inf`` are never accepted). Anything else (an unknown
key, a wrong type, a value out of range, a file that is not UTF-8 or not TOML) is a ``ConstraintsError``
naming the file, the key and its line. Values are read with ``tomllib``; a key's line comes from
``key_lines``, a small scan that follows ``[table]`` / ``[[array]]`` headers and dotted keys, so a key is
found in its own section even when another section has a key of the same name.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from triage.errors import UsageError

from .caching import DEFAULT_KEYS as CACHING_KEYS
from .stages import STAGES, StageRule

FILENAME = "triage.toml"


@dataclass(frozen=True)
class Spec:
    """A key's type and valid range: a finite number in [lo, hi] (``lo_open``/``hi_open`` exclude the
    bound), a whole number when ``whole``, or text when ``text``."""
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    whole: bool = False
    text: bool = False
    texts: bool = False   # a non-empty array of text

    def check(self, v, unit: str | None = None) -> str | None:
        """None when ``v`` is valid, else what is wrong with it (``unit``: what the number measures)."""
        if self.text:
            return None if isinstance(v, str) else f"expected text, got {_kind(v)}"
        if self.texts:
            ok = isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
            return None if ok else f"expected a non-empty array of text, got {_kind(v)}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"expected a number, got {_kind(v)}"
        if not math.isfinite(v):
            return f"expected a finite number, got {v}"
        if self.whole and v != int(v):
            return f"expected a whole number, got {v}"
        below = v <= self.lo if self.lo_open else v < self.lo
        above = v >= self.hi if self.hi_open else v > self.hi
        if below or above:
            return f"{v} is out of range (must be {self.describe()}{', a ' + unit if unit else ''})"
        return None

    def describe(self) -> str:
        if self.lo == -math.inf and self.hi == math.inf:
            return "a finite number"
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def _kind(v) -> str:
    return {bool: "a boolean", str: "text", dict: "a table", list: "an array"}.get(type(v), type(v).__name__)


TEXT = Spec(text=True)
LATENCY = Spec(0, lo_open=True)           # a latency objective or budget total: > 0 ms
STAGE_MS = Spec(0)                        # a stage's share of the budget may be 0 ms
RATE = Spec(0, 1, hi_open=True)           # an error rate: [0, 1) (1 would allow every request to fail)
FRACTION = Spec(0, 1)
POSITIVE = Spec(0, lo_open=True)
NONNEGATIVE = Spec(0)

SCHEMA: dict[str, dict[str, Spec]] = {
    "slo": {"p50_ms": LATENCY, "p95_ms": LATENCY, "p99_ms": LATENCY, "error_rate": RATE, "window": TEXT,
            "owner": TEXT,
            # LLM routes: p95 of time to first token and of inter-token latency (analyzers/llm.py)
            "ttft_p95_ms": LATENCY, "itl_p95_ms": LATENCY},
    "budget": {"total_ms": LATENCY, "headroom_ms": STAGE_MS, "owner": TEXT, **{f"{s}_ms": STAGE_MS for s in STAGES}},
    "cost": {"cap_per_1000_calls": POSITIVE, "accelerator_price_per_hour": NONNEGATIVE, "accelerators": POSITIVE,
             "currency": TEXT, "owner": TEXT},
    "guardrails": {"max_accuracy_drop": FRACTION, "min_top1_agreement": FRACTION, "max_abs_diff": NONNEGATIVE,
                   "max_error_rate": FRACTION, "owner": TEXT},
    "scorecard": {"impact": FRACTION, "feasibility": FRACTION, "risk": FRACTION},
    # span attributes that fingerprint a request's input (analyzers/caching.py)
    "caching": {"fingerprint_keys": Spec(texts=True)},
    # severity from a finding's saving on p95 (analyzers/impact.py, docs/impact.md)
    "severity": {"critical_share": Spec(0, 1, lo_open=True), "warning_share": Spec(0, 1, lo_open=True),
                 "min_saving_ms": NONNEGATIVE, "cause_explains_share": FRACTION, "slo_headroom": FRACTION},
    # the vLLM serving unit an engine-settings change restarts (remediations/engine_args.py): the arguments
    # file it reads, its restart command as an argv list (never a shell string), its health URL
    "vllm": {"args_file": TEXT, "restart": Spec(texts=True), "health_url": TEXT, "timeout_s": POSITIVE},
}

# Why these defaults (docs/impact.md): a fix that takes a quarter of p95 away changes what users feel at
# once (critical); a tenth is the smallest change that stands clear of the run-to-run noise of a p95 over a
# few hundred tail requests (warning); below 2 ms a saving is within the jitter of one network hop and a
# scheduler tick, whatever its share of a very fast service's p95; a cause must explain at least a quarter
# of its symptom's saving to be called its cause (a 2 ms window cannot explain a 95 ms queue).
SEVERITY_DEFAULTS = {"critical_share": 0.25, "warning_share": 0.10, "min_saving_ms": 2.0, "cause_explains_share": 0.25,
                     "slo_headroom": 0.5}

# A rule threshold's range follows its unit (analyzers/rule.py ``Threshold.unit``); counts whose default is a
# whole number must stay whole.
UNIT_SPECS: dict[str, Spec] = {
    "fraction": FRACTION,
    "ratio": POSITIVE, "x budget": POSITIVE, "attempts/call": POSITIVE, "variance/mean": POSITIVE,
    "Spearman rho": Spec(-1, 1),
    "ms": NONNEGATIVE, "s": NONNEGATIVE, "requests": NONNEGATIVE, "buckets": Spec(1),
}


def threshold_spec(unit: str | None, default) -> Spec:
    spec = UNIT_SPECS.get(unit or "", Spec())
    if isinstance(default, int) and not isinstance(default, bool):
        spec = Spec(spec.lo, spec.hi, spec.lo_open, spec.hi_open, whole=True)
    return spec


class ConstraintsError(UsageError):
    pass


@dataclass
class Constraints:
    slo: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    guardrails: dict = field(default_factory=lambda: {"min_top1_agreement": 0.99, "max_error_rate": 0.01})
    scorecard: dict = field(default_factory=lambda: {"impact": 0.5, "feasibility": 0.3, "risk": 0.2})
    severity: dict = field(default_factory=lambda: dict(SEVERITY_DEFAULTS))
    caching: dict = field(default_factory=lambda: {"fingerprint_keys": list(CACHING_KEYS)})
    vllm: dict = field(default_factory=dict)
    stage_rules: tuple[StageRule, ...] = ()
    rules: dict[str, dict] = field(default_factory=dict)
    path: str | None = None

    def threshold(self, rule_id: str, name: str, default):
        return self.rules.get(rule_id, {}).get(name, default)


# -- where a key is written ------------------------------------------------------------------------------
_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")


def _key_path(raw: str) -> tuple[str, ...] | None:
    """A dotted key as TOML reads it (quotes and escapes resolved by tomllib itself)."""
    try:
        node = tomllib.loads(f"{raw} = 0")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        (k, node), = node.items()
        path.append(k)
    return tuple(path)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Each table and key of a TOML document, as its full path, mapped to the (first) line that defines it.
    Lines inside multi-line strings and multi-line arrays are not taken for keys or headers."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None   # the delimiter of an open multi-line string
    depth = 0                      # open brackets of a multi-line value
    for no, line in enumerate(text.splitlines(), 1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth == 0:
            m = _HEADER.match(line)
            if m:
                path = _key_path(m.group(2))
                if path is not None:
                    table = path
                    for i in range(1, len(path) + 1):  # [a.b] also defines a
                        lines.setdefault(path[:i], no)
                continue
            m = _ASSIGN.match(line)
            if m:
                path = _key_path(m.group(1))
                if path is not None:
                    for i in range(1, len(path) + 1):  # a.b.c = 1 also defines a and a.b
                        lines.setdefault(table + path[:i], no)
                rest = line[m.end():]
            else:
                rest = line
        else:
            rest = line
        depth, in_string = _scan_value(rest, depth)
    return lines


def _scan_value(s: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after ``s`` (strings and comments skipped), and an opened multi-line string's delimiter."""
    i = 0
    while i < len(s):
        c = s[i]
        if c == "#":
            break
        if s.startswith('"""', i) or s.startswith("'''", i):
            delim = s[i:i + 3]
            end = s.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if c in "\"'":
            end = i + 1
            while end < len(s) and s[end] != c:
                end += 2 if (c == '"' and s[end] == "\\") else 1
            i = end + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else '"' + p.replace('"', '\\"') + '"' for p in path)


class _Errors:
    def __init__(self, path: str, text: str):
        self.path, self.lines = path, key_lines(text)

    def __call__(self, key: tuple[str, ...], msg: str) -> ConstraintsError:
        line = None
        for n in range(len(key), 0, -1):  # the key's own line, else the nearest table or inline table holding it
            line = self.lines.get(key[:n])
            if line:
                break
        return ConstraintsError(f"{self.path}{f':{line}' if line else ''}: {_dotted(key)}: {msg}")


def load(path: str | Path, known_rules: dict[str, dict] | None = None,
         rule_units: dict[str, dict[str, str]] | None = None) -> Constraints:
    """Parse and validate a triage.toml. ``known_rules`` maps rule id → its default thresholds,
    ``rule_units`` rule id → threshold → unit (for the valid range); both come from the rule registry
    (``analyzers.rules.default_thresholds`` / ``threshold_units``), which imports this module, not the other way."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConstraintsError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConstraintsError(f"{p}:{line}: not UTF-8 text (byte {exc.start}: {exc.reason}); "
                               f"TOML files are UTF-8") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConstraintsError(f"{p}: {exc}") from exc
    err = _Errors(str(p), text)
    c = Constraints(path=str(p))
    for section, value in doc.items():
        if section not in (*SCHEMA, "stages", "rules"):
            raise err((section,), "unknown section (allowed: slo, budget, cost, guardrails, scorecard, severity, caching, "
                                   "vllm, stages, rules)")
        if not isinstance(value, dict):
            raise err((section,), f"must be a table ([{section}]), got {_kind(value)}")
        if section in SCHEMA:
            for k, v in value.items():
                spec = SCHEMA[section].get(k)
                if spec is None:
                    raise err((section, k), f"unknown key (allowed: {', '.join(SCHEMA[section])})")
                problem = spec.check(v)
                if problem:
                    raise err((section, k), problem)
            if section == "vllm" and not str(value.get("health_url", "http://")).startswith(("http://", "https://")):
                raise err((section, "health_url"), "expected an http:// or https:// URL")
            getattr(c, section).update(value)
            if section == "severity" and c.severity["warning_share"] > c.severity["critical_share"]:
                key = "warning_share" if "warning_share" in value else "critical_share"
                raise err((section, key), f"warning_share ({c.severity['warning_share']:g}) must not exceed "
                                          f"critical_share ({c.severity['critical_share']:g})")
        elif section == "stages":
            rules = []
            for pattern, stage in value.items():
                if not isinstance(stage, str) or stage not in STAGES:
                    raise err((section, pattern), f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise err((section, pattern), f"invalid pattern: {exc}") from exc
                rules.append(StageRule(pattern.lower(), stage))
            c.stage_rules = tuple(rules)
        else:
            for rid, overrides in value.items():
                if known_rules is not None and rid not in known_rules:
                    raise err((section, rid), f"unknown rule (known: {', '.join(sorted(known_rules))})")
                if not isinstance(overrides, dict):
                    raise err((section, rid), f"must be a table of thresholds ([rules.{rid}]), got {_kind(overrides)}")
                defaults = (known_rules or {}).get(rid, {})
                for k, v in overrides.items():
                    if known_rules is not None and k not in defaults:
                        raise err((section, rid, k), f"unknown threshold (known: {', '.join(defaults)})")
                    unit = (rule_units or {}).get(rid, {}).get(k)
                    problem = threshold_spec(unit, defaults.get(k)).check(v, unit)
                    if problem:
                        raise err((section, rid, k), problem)
                c.rules[rid] = dict(overrides)
    return c


def find(paths: list[str | Path], explicit: str | Path | None, known_rules: dict[str, dict] | None = None,
         rule_units: dict[str, dict[str, str]] | None = None) -> Constraints:
    """The constraints in force: ``--constraints FILE``, else a triage.toml next to the capture, else defaults."""
    if explicit:
        return load(explicit, known_rules, rule_units)
    for p in paths:
        p = Path(p)
        candidate = (p if p.is_dir() else p.parent) / FILENAME
        if candidate.is_file():
            return load(candidate, known_rules, rule_units)
    return Constraints()
