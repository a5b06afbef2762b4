"""The one metric catalogue (collectors/metric_catalogue.py): every rule declares the metrics it reads
(``Rule.metrics``), a rule cannot read a metric it does not declare (its source, the helpers it calls, and the
names it actually asks the store for), and live mode queries exactly the union of the declarations."""
import ast
import inspect
import re
from pathlib import Path

import pytest

from triage.analyzers import engine, llm, llm_signals, metrics
from triage.analyzers.constraints import Constraints
from triage.analyzers.rules import RULES
from triage.collectors import metric_catalogue as catalogue
from triage.collectors.metric_catalogue import CATALOGUE, HISTOGRAM, aliases, base_name, live_queries

from conftest import SAMPLES

FIXTURES = Path(__file__).parent / "fixtures"
_NAME = re.compile(r"(?<![\w:.])[A-Za-z_][\w:.]*(?![\w:])")
HELPER_MODULES = (metrics, llm_signals)


def _names_in_text(text: str) -> set[str]:
    """Catalogue names written anywhere in ``text`` (code, strings, docstrings), series suffixes included."""
    return {b for tok in _NAME.findall(text) if (b := base_name(tok.rstrip(".:")))}


def _constants() -> dict[str, set[str]]:
    """Identifier -> catalogue names, for the name tuples (and GPU_UTIL) of the catalogue and the helpers."""
    out = {}
    for mod in (catalogue, *HELPER_MODULES):
        for k, v in vars(mod).items():
            if (k.isupper() and k != "CATALOGUE" and isinstance(v, (tuple, dict)) and v
                    and all(isinstance(n, str) and n in CATALOGUE for n in v)):
                out[k] = set(v)
    return out


def _identifiers(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
           {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _helper_reads(consts) -> dict[str, set[str]]:
    """Helper function name -> catalogue names it reads, itself or through the helpers it calls."""
    bodies = {}
    for mod in HELPER_MODULES:
        src = inspect.getsource(mod)
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef):
                bodies[node.name] = (ast.get_source_segment(src, node), _identifiers(node))
    reads = {f: _names_in_text(text) | set().union(*(consts[i] for i in ids if i in consts))
             for f, (text, ids) in bodies.items()}
    changed = True
    while changed:
        changed = False
        for f, (_, ids) in bodies.items():
            more = set().union(*(reads[g] for g in ids if g in reads and g != f)) - reads[f]
            if more:
                reads[f] |= more
                changed = True
    return reads


def _static_reads(rule) -> set[str]:
    mod = inspect.getmodule(rule.detect)
    src = inspect.getsource(mod)
    consts = _constants()
    helpers = _helper_reads(consts)
    ids = _identifiers(ast.parse(src))
    return (_names_in_text(src) | set().union(*(consts[i] for i in ids if i in consts))
            | set().union(*(helpers[i] for i in ids if i in helpers)))


def test_the_catalogue_describes_every_name():
    for m in CATALOGUE.values():
        assert m.kind in ("gauge", "counter", "histogram", "info") and m.unit and len(m.meaning) > 5, m
        assert (m.promql == "") == (m.kind == HISTOGRAM) and (m.kind != HISTOGRAM or m.quantiles), m
        for a in aliases(m.name):
            assert m.name in aliases(a) and CATALOGUE[a].kind == m.kind
    assert set(aliases("vllm:kv_cache_usage_perc")) == {"vllm:gpu_cache_usage_perc", "sglang:token_usage"}
    assert base_name("vllm:time_to_first_token_seconds_bucket") == base_name("vllm:time_to_first_token_seconds:p95") \
        == "vllm:time_to_first_token_seconds"
    assert base_name("nv_inference_count_sum") is None and base_name("up") is None


def test_rules_declare_catalogue_names_and_what_they_require():
    for r in RULES:
        assert set(r.metrics) <= set(CATALOGUE), r.id
        assert {m for n in r.requires for m in n.metrics} <= set(r.metrics), r.id


def test_a_rule_that_requires_an_undeclared_metric_is_refused():
    from triage.analyzers.rule import Need, Rule

    with pytest.raises(ValueError, match="not declared"):
        Rule(id="x", title="X", category="x", thresholds={}, doc="", detect=lambda c, t: [],
             requires=(Need(metrics=("tgi_queue_size",)),))
    with pytest.raises(ValueError, match="not in the catalogue"):
        Rule(id="x", title="X", category="x", thresholds={}, doc="", detect=lambda c, t: [], metrics=("made_up",))


def test_no_rule_reads_a_metric_it_does_not_declare_in_its_source():
    """Names written in the rule's module, catalogue tuples it refers to, and what the helpers it calls read
    (analyzers/metrics.py, analyzers/llm_signals.py, followed through their own calls)."""
    for r in RULES:
        assert _static_reads(r) <= set(r.metrics), (r.id, sorted(_static_reads(r) - set(r.metrics)))


def test_the_static_check_sees_helpers_and_constants():
    reads = _static_reads(next(r for r in RULES if r.id == "kv-cache-pressure"))
    assert {"vllm:cache_config_info", "vllm:request_prompt_tokens", "vllm:num_requests_running",
            "vllm:request_queue_time_seconds", "sglang:num_retracted_reqs"} <= reads
    assert {"nv_inference_count", "nv_inference_exec_count"} <= _static_reads(
        next(r for r in RULES if r.id == "batching-window"))


class _Recording:
    """A store that notes every metric name asked for from ``samples``."""

    def __init__(self, store):
        self._store, self.asked = store, set()

    def query(self, sql, params=None):
        if "FROM samples WHERE metric IN" in sql:
            self.asked |= set(params or ())
        return self._store.query(sql, params) if params is not None else self._store.query(sql)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.mark.parametrize("path", [SAMPLES / "gpu-idle", SAMPLES / "overload", FIXTURES / "captures" / "vllm-gateway-mixed",
                                  FIXTURES / "captures" / "triton-gateway-mixed"], ids=lambda p: p.name)
def test_no_rule_asks_the_store_for_a_metric_it_does_not_declare(path):
    from triage.analyzers.latency import window
    from triage.analyzers.rule import Available, Context
    from triage.sessions.offline import analyze

    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    a = analyze([path])
    for r in RULES:
        rec = _Recording(a.store)
        ctx = Context(store=rec, constraints=Constraints(), window=window(a.store), available=Available.of(a.store))
        r.detect(ctx, {k: t.default for k, t in r.thresholds.items()})
        asked = {base_name(n) for n in rec.asked}
        assert None not in asked and asked <= set(r.metrics), (r.id, sorted(asked - set(r.metrics)))
    rec = _Recording(a.store)
    llm.token_latency_from_metrics(rec)
    assert {base_name(n) for n in rec.asked} <= set(llm.METRICS)


def test_live_mode_queries_exactly_the_union_of_the_declarations():
    from triage.sessions.live import LiveSession

    union = set(llm.METRICS).union(*(r.metrics for r in RULES))
    assert set(engine.metrics_read()) == union
    s = LiveSession(constraints=Constraints(), listen=None, prometheus_url="http://127.0.0.1:9").start()
    try:
        assert set(s._source.metrics) == union
        everything = {CATALOGUE[m].series_name for m in CATALOGUE}
        s._source._present, s._source._present_at = everything, float("inf")  # a server with every series
        assert {base_name(name) for name, _ in s._source.queries()} == union
        assert {base_name(name) for name, _ in live_queries(union, everything)} == union
    finally:
        s.stop()
