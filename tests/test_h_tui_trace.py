"""A trace's tree, exclusive times and critical path (analyzers/trace.py), and its OTLP JSON export read back."""
import json
import time

import pytest

from triage.analyzers import trace as tr
from triage.analyzers.trace import Span, build
from conftest import ROOT, SAMPLES, analysis_of

TRITON = ROOT / "tests" / "fixtures" / "captures" / "triton-gateway-mixed"


def sp(sid, parent, b, e, name=None):
    return Span("t1", sid, parent, "svc", name or sid, 1, b, e)


def crit(spans):
    t = build("t1", spans)
    return t, [(s, b, e) for s, b, e in t.critical]


def test_sequential_children_all_on_the_path():
    t, path = crit([sp("r", None, 0, 100), sp("a", "r", 10, 40), sp("b", "r", 50, 90)])
    assert path == [("r", 90, 100), ("b", 50, 90), ("r", 40, 50), ("a", 10, 40), ("r", 0, 10)]
    assert sum(e - b for _, b, e in path) == 100
    assert [t.spans[x].self_ns for x in "rab"] == [30, 30, 40]


def test_parallel_siblings_the_last_finishing_one_wins():
    # a and b overlap: b finishes last, so the path goes through b; a ended after b started: not on it
    t, path = crit([sp("r", None, 0, 100), sp("a", "r", 10, 70), sp("b", "r", 20, 80)])
    assert [s for s, _, _ in path] == ["r", "b", "r"]
    assert t.spans["a"].critical_ns == 0 and t.spans["b"].critical_ns == 60
    assert t.spans["r"].self_ns == 100 - 70  # union of [10,70) and [20,80)


def test_children_ending_before_the_critical_child_starts_are_taken_next():
    # c ends before b starts: after b the walk continues with c (Jaeger's "returning child start time")
    t, path = crit([sp("r", None, 0, 100), sp("c", "r", 5, 15), sp("a", "r", 10, 60), sp("b", "r", 30, 90)])
    assert [s for s, _, _ in path] == ["r", "b", "r", "c", "r"]
    assert path[1] == ("b", 30, 90) and path[3] == ("c", 5, 15)
    assert t.spans["a"].critical_ns == 0


def test_grandchildren_and_a_child_outliving_its_parent_is_clipped():
    t, path = crit([sp("r", None, 0, 100), sp("a", "r", 10, 150), sp("g", "a", 20, 140)])
    a, g = t.spans["a"], t.spans["g"]
    assert (a.b, a.e) == (10, 100) and (g.b, g.e) == (20, 100)
    assert path == [("g", 20, 100), ("a", 10, 20), ("r", 0, 10)]
    assert sum(s.self_ns for s in t.spans.values()) == 100


def test_a_child_wholly_after_its_parent_is_empty_at_the_parents_end():
    # a call's server side that ran after the caller gave up (retry storms): never inflates the trace
    t, path = crit([sp("r", None, 0, 100), sp("a", "r", 10, 50), sp("late", "a", 5000, 9000)])
    late = t.spans["late"]
    assert (late.b, late.e) == (50, 50) and late.self_ns == 0 and late.critical_ns == 0
    assert (t.start_ns, t.end_ns) == (0, 100) and sum(s.self_ns for s in t.spans.values()) == 100


def test_orphans_cycles_and_duplicates_do_not_break_the_tree():
    spans = [sp("r", None, 0, 10), sp("x", "missing", 3, 5), sp("p", "q", 0, 1), sp("q", "p", 0, 1),
             sp("r", None, 0, 12)]
    t = build("t1", spans)
    assert {s.span_id for s in t.roots} == {"r", "x", "p", "q"}
    assert t.spans["r"].e == 12  # the longer copy of a duplicated span wins
    assert len(t.order()) == 4


def test_ten_thousand_spans_build_quickly_and_deep_trees_do_not_recurse():
    spans = [sp("root", None, 0, 10_000_000)]
    spans += [sp(f"c{i}", "root", i * 1000, i * 1000 + 900) for i in range(8000)]
    spans += [sp(f"d{i}", "d" + str(i - 1) if i else "c0", 0, 900 - i // 10) for i in range(2000)]  # a chain
    t0 = time.perf_counter()
    t = build("t1", spans)
    took = time.perf_counter() - t0
    assert len(t.order()) == 10_001 and max(s.depth for s in t.spans.values()) == 2001
    assert sum(e - b for _, b, e in t.critical) == 10_000_000
    assert all(t.spans[f"c{i}"].critical_ns == 900 for i in range(1, 8000))  # sequential siblings: all on it
    assert t.spans["d1999"].critical_ns == 900 - 199  # the deepest span of c0's chain ends the walk there
    # generous: about 0.1 s here; scanning every sibling at each step of the walk took ~30 s (8,000 siblings)
    assert took < 5, took


@pytest.fixture(scope="module")
def triton():
    return analysis_of(str(TRITON))


def test_retry_storm_traces_match_stage_attribution_span_for_span():
    a = analysis_of(str(SAMPLES / "retry-storm"))
    tids = [r[0] for r in a.store.query("SELECT trace_id FROM requests ORDER BY duration_ns DESC, trace_id LIMIT 20")]
    for tid in tids:
        t = tr.load(a.store, tid)
        own = dict(a.store.query("SELECT span_id, self_ns FROM span_times WHERE trace_id = ?", [tid]))
        assert {s.span_id: s.self_ns for s in t.spans.values() if s.span_id in own} == own
        for r in t.roots:
            total, e2e = tr.request_sum(t, r.span_id)
            assert total == e2e and sum(e - b for sid, b, e in t.critical if _under(t, sid, r)) == e2e


def _under(t, sid, root):
    s = t.spans[sid]
    while s.parent is not None:
        s = s.parent
    return s is root


def test_triton_exemplar_exclusive_times_add_up_and_match_stage_attribution(triton):
    store = triton.store
    ex = [f for f in triton.report()["findings"] if f["evidence"].get("exemplar_trace_ids")][0]
    for tid in ex["evidence"]["exemplar_trace_ids"]:
        t = tr.load(store, tid)
        root = t.roots[0]
        assert root.service == "gateway"
        total, e2e = tr.request_sum(t, root.span_id)
        dur = store.scalar("SELECT duration_ns FROM requests WHERE trace_id = ? AND root_id = ?", [tid, root.span_id])
        assert total == e2e == dur
        own = dict(store.query("SELECT span_id, self_ns FROM span_times WHERE trace_id = ?", [tid]))
        assert {s.span_id: s.self_ns for s in t.spans.values()} == own
        names = {s.name: s for s in t.spans.values()}
        assert names["compute"].stage == "inference"
        assert any(n == "COMPUTE_START" for n, _, _ in names["compute"].events)
        assert any(n == "QUEUE_START" for n, _, _ in names["clf"].events) and names["clf"].queue_ns > 0
        chain, s = [], names["compute"]
        while s is not None:
            chain.append(s.service + ":" + s.name)
            s = s.parent
        assert chain[-1] == "gateway:POST /v1/classify" and "gateway:POST triton /v2/models/clf/infer" in chain
        assert sum(e - b for _, b, e in t.critical) == e2e


def test_otlp_export_reads_back_as_the_same_trace(triton, tmp_path):
    from triage.sessions.offline import analyze
    from triage.tui.export import write_new

    tid = triton.store.query("SELECT trace_id FROM requests ORDER BY duration_ns DESC LIMIT 1")[0][0]
    t = tr.load(triton.store, tid)
    doc = tr.to_otlp(t)
    p1 = write_new(f"trace-{tid}", ".json", json.dumps(doc), tmp_path)
    p2 = write_new(f"trace-{tid}", ".json", json.dumps(doc), tmp_path)
    assert p1 != p2 and p1.read_text() == p2.read_text()  # never overwrites: a new name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    back = analyze([str(p1)])
    t2 = tr.load(back.store, tid)
    def key(s):
        return (s.span_id, s.parent_span_id, s.service, s.name, s.kind, s.start_ns, s.end_ns, s.status_code,
                s.attributes, s.resource, s.events, s.stage, s.self_ns, s.queue_ns)
    assert sorted(map(key, t.spans.values())) == sorted(map(key, t2.spans.values()))
