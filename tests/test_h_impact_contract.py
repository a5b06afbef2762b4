"""The typed rule contract: requires (metric families from the one catalogue, among the metrics it declares), thresholds with units and
reasons, relations declared on the rules, and 'not evaluated: why' built by the engine from requires."""
import ast
import re
from pathlib import Path

from triage.analyzers.constraints import Constraints
from triage.analyzers.engine import relations, run_rules
from triage.analyzers.rules import BY_ID, RULES
from triage.collectors.metric_catalogue import CATALOGUE

RULES_DIR = Path(__file__).resolve().parents[1] / "analyzers" / "rules"


def test_required_metric_families_are_in_the_catalogue():
    for r in RULES:
        for need in r.requires:
            for m in need.metrics:
                assert m in CATALOGUE and m in r.metrics, f"{r.id}: {m} is not in the catalogue or not declared"


def test_every_rule_declares_what_it_requires_and_thresholds_have_reasons():
    for r in RULES:
        assert r.requires, r.id
        assert r.severity_from in ("saving", "rule"), r.id
        for k, t in r.thresholds.items():
            assert t.unit and len(t.meaning) > 10, (r.id, k)


def test_relations_name_real_rules():
    for up, down, why in relations():
        assert up in BY_ID and down in BY_ID and why


def test_the_issue_literals_are_gone_from_rule_code():
    """The constants issue 14 lists now live in the thresholds tables."""
    src = {p.name: p.read_text() for p in RULES_DIR.glob("*.py")}
    for pattern in (r">= 0\.5\b", r"2 \* cap", r"< 3\.0", r"0\.2 \* max_batch", r"count\(\*\) >= 5", r"\* 0\.7",
                    r"/ 50\b"):
        hits = [n for n, s in src.items() if re.search(pattern, s)]
        assert hits == [], (pattern, hits)


def test_engine_says_not_evaluated_from_requires_without_running_the_rule(capture_store=None):
    from triage.analyzers.rule import Need, Rule
    from triage.sessions.offline import analyze
    from conftest import SAMPLES

    ran = []
    probe = Rule(id="probe", title="Probe", category="x", thresholds={}, doc="",
                 detect=lambda ctx, th: ran.append(1) or [],
                 requires=(Need(metrics=("tgi_queue_size",), what="TGI queue metrics"),
                           Need(constraints=("budget.total_ms",))), metrics=("tgi_queue_size",))
    a = analyze([SAMPLES / "healthy"])
    [f] = run_rules(a.store, Constraints(), rules=(probe,))
    assert ran == [] and not f.evaluated and f.severity == "info"
    assert f.summary == ("Not evaluated: no TGI queue metrics (tgi_queue_size), "
                         "no [budget] total_ms in triage.toml.")
    assert run_rules(a.store, Constraints(budget={"total_ms": 50.0}), rules=(probe,)) == [] and ran == [1]
