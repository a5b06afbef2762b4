"""The filter language (analyzers/requests.py): parsing, errors naming the token, parameterised SQL, and the
rows it selects checked against plain Python over the same requests."""
import pytest

from triage.analyzers import requests as rq
from triage.analyzers.requests import FilterError, compile_filter, parse
from conftest import SAMPLES, analysis_of


def test_terms_fields_ops_and_units():
    t = parse('route~classify  duration>100ms stage.queue>=20ms status=error attr.model.version=3 input<=64 '
              'calls!=0 model!~bert trace=abc duration<1.5s stage.inference<250us route="POST /v1"')
    assert [(x.field, x.op) for x in t] == [
        ("route", "~"), ("duration", ">"), ("stage.queue", ">="), ("status", "="), ("attr.model.version", "="),
        ("input", "<="), ("calls", "!="), ("model", "!~"), ("trace", "="), ("duration", "<"),
        ("stage.inference", "<"), ("route", "=")]
    assert t[1].value == 100e6 and t[2].value == 20e6 and t[9].value == 1.5e9 and t[10].value == 250e3
    assert t[4].value == "3" and t[11].value == "POST /v1"
    assert parse("duration>7")[0].value == 7e6  # a bare number is milliseconds
    assert parse("duration>7ns")[0].value == 7 and parse("duration>2µs")[0].value == 2000
    assert parse("ROUTE~x")[0].field == "route" and parse("attr.Http.Route=x")[0].field == "attr.Http.Route"
    assert parse("") == () and parse("   ") == ()
    assert parse(r'route="a \"b\" c"')[0].value == 'a "b" c'


@pytest.mark.parametrize("text, token, reason", [
    ("foo", "foo", "expected FIELD OP VALUE"),
    ("route~x bogus=1", "bogus=1", "unknown field"),
    ("duration>fast", "duration>fast", "not a duration"),
    ("duration>10parsecs", "duration>10parsecs", "not a duration"),
    ("duration~10ms", "duration~10ms", "is a number"),
    ("route>3", "route>3", "is text"),
    ("status=maybe", "status=maybe", "status takes"),
    ("status>ok", "status>ok", "status takes"),
    ("stage.lunch>1ms", "stage.lunch>1ms", "unknown stage"),
    ("stage.queue~1ms", "stage.queue~1ms", "a stage time is a duration"),
    ("input>many", "input>many", "not a number"),
    ("attr.x>big", "attr.x>big", "not a number"),
    ("route=", "route=", "missing value"),
    ("duration>>1", "duration>>1", "missing value"),
    ('route=ab"c"', 'route=ab"c"', "a quote inside a value"),
    ('route=ab"c', '"c', "unterminated quote"),
    ('route="open', '"open', "unterminated quote"),
    ("attr.=3", "attr.=3", "unknown field"),
    ("=3", "=3", "expected FIELD OP VALUE"),
])
def test_bad_expressions_name_the_token(text, token, reason):
    with pytest.raises(FilterError) as e:
        compile_filter(text)
    assert token in e.value.token and reason in e.value.reason
    assert text[e.value.pos:].startswith(e.value.token[:1])  # the position points at the token
    assert token in str(e.value)


def test_values_never_enter_the_sql():
    evil = "x'); DROP TABLE spans; --"
    f = compile_filter(f'route="{evil}" attr.k="{evil}" model~{evil.replace(" ", "")}')
    assert "DROP" not in f.where and "x'" not in f.where
    assert evil in f.params
    assert f.where.count("?") == len(f.params)


@pytest.fixture(scope="module")
def store():
    a = analysis_of(str(SAMPLES / "slow-tokenizer"))
    rq.materialize(a.store)
    return a.store


def _all(store):
    return rq.page(store, None, "e2e_ms", True, 0, 10**9)


@pytest.mark.parametrize("text, keep", [
    ("duration>100ms", lambda r: r["duration_ns"] > 100e6),
    ("duration<=50", lambda r: r["duration_ns"] <= 50e6),
    ("stage.preprocess>30ms", lambda r: r["pre"] > 30e6),
    ("stage.preprocess>30ms duration<120ms", lambda r: r["pre"] > 30e6 and r["duration_ns"] < 120e6),
    ("status=ok", lambda r: not r["error"]),
    ("status!=ok", lambda r: r["error"]),
    ("route~CHAT", lambda r: "chat" in r["route"].lower()),
    ("route!~chat", lambda r: "chat" not in r["route"].lower()),
    ("input>=256", lambda r: r["input_size"] is not None and r["input_size"] >= 256),
    ("calls>0", lambda r: r["calls"] > 0),
])
def test_filter_selects_what_python_selects(store, text, keep):
    rows = _all(store)
    want = {(r["trace_id"], r["root_id"]) for r in rows if keep(r)}
    f = compile_filter(text)
    got = {(r["trace_id"], r["root_id"]) for r in rq.page(store, f, "e2e_ms", True, 0, 10**9)}
    assert got == want and rq.count(store, f) == len(want)
    assert 0 < len(rows)


def test_attribute_terms_look_at_every_span_of_the_request(store):
    keys = store.query("""SELECT s.trace_id, json_extract_string(s.attributes, '$."app.input_tokens"') v
                          FROM spans s JOIN span_times st USING (trace_id, span_id)
                          WHERE v IS NOT NULL ORDER BY 1 LIMIT 1""")
    assert keys, "the sample's spans carry app.input_tokens"
    value = keys[0][1]
    f = compile_filter(f"attr.app.input_tokens={value}")
    n = rq.count(store, f)
    assert 0 < n < rq.count(store, compile_filter(""))
    numeric = rq.count(store, compile_filter(f"attr.app.input_tokens>={value}"))
    assert numeric >= n
    assert rq.count(store, compile_filter(f"attr.app.input_tokens!={value}")) == rq.count(store, None) - n


def test_sort_any_column_and_pages_are_consistent(store):
    total = rq.count(store)
    for col in rq.COLUMN_NAMES:
        for desc in (True, False):
            whole = rq.page(store, None, col, desc, 0, total)
            pages = rq.page(store, None, col, desc, 0, 100) + rq.page(store, None, col, desc, 100, total)
            assert [r["trace_id"] for r in pages] == [r["trace_id"] for r in whole], col
    lat = [r["duration_ns"] for r in rq.page(store, None, "e2e_ms", True, 0, total)]
    assert lat == sorted(lat, reverse=True)
    with pytest.raises(ValueError):
        rq.page(store, None, "1; DROP TABLE spans")


def test_stage_columns_add_up_to_the_request(store):
    for r in rq.page(store, None, "e2e_ms", True, 0, 50):
        parts = sum(r[c] for c, _ in rq.STAGE_COLUMNS)
        assert parts == r["duration_ns"] or abs(parts - r["duration_ns"]) <= 1
