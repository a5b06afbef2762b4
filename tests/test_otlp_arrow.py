"""The Arrow path for OTLP JSON lines changes speed, never results.

Every chunk the Arrow path takes must give the same rows in ``spans`` and ``span_events`` as the msgspec
path (the reference: it reports problems by line), and the msgspec path must find no problem in it. Every
chunk it cannot load exactly must be refused with nothing written. The inputs are the SDK-generated
samples, the real Triton capture, spans made with the real OpenTelemetry SDK carrying every attribute type,
small hand-made variants of a valid line (enum names, base64 ids, the legacy layout...), and hypothesis
mutations of a real line.
"""
from __future__ import annotations

import copy
import functools
import json
import random

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from triage.collectors import otlp_lines_arrow, otlp_lines_exact
from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store
from conftest import CAPTURE, ROOT, examples

SAMPLES = sorted((ROOT / "sample_traces").glob("*/otlp/triton.jsonl"))
SPAN_ORDER = "ORDER BY ALL"


def _rows(store: Store) -> tuple[list, list]:
    return (store.query(f"SELECT * EXCLUDE (source) FROM spans {SPAN_ORDER}"),
            store.query(f"SELECT * FROM span_events {SPAN_ORDER}"))


def _msgspec(chunk: bytes) -> tuple[tuple[list, list], int]:
    store = Store()
    batch = otlp_lines_exact.decode_lines(chunk, "x", 1)
    otlp_lines_exact.write(store, batch)
    return _rows(store), batch.problems.count


def _arrow_store(chunk: bytes) -> Store | None:
    """The chunk loaded by the Arrow path, or None when it refused it (having written nothing)."""
    store = Store()
    with store.writer() as con:
        n = otlp_lines_arrow.load_chunk(con, chunk, "x")
    if n is None:
        assert store.scalar("SELECT count(*) FROM spans") == 0, "a refused chunk must write nothing"
        assert store.scalar("SELECT count(*) FROM span_events") == 0
        return None
    assert n == store.scalar("SELECT count(*) FROM spans")
    return store


def _arrow(chunk: bytes):
    store = _arrow_store(chunk)
    return None if store is None else _rows(store)


def _same(chunk: bytes, must_fit: bool = True, store: Store | None = None) -> bool:
    """Arrow's rows (of ``store`` if given) equal msgspec's; returns whether Arrow took the chunk."""
    got = _rows(store) if store is not None else _arrow(chunk)
    if got is None:
        assert not must_fit, "the Arrow path refused a chunk it should take"
        return False
    want, problems = _msgspec(chunk)
    assert problems == 0, "the Arrow path took a chunk in which the exact reader finds problems"
    assert got[0] == want[0]
    assert got[1] == want[1]
    return True


@pytest.mark.parametrize("path", SAMPLES, ids=[p.parent.parent.name for p in SAMPLES])
def test_sdk_samples_give_identical_rows(path):
    chunk = path.read_bytes()
    assert _same(chunk)
    prepared = otlp_lines_arrow.prepare(chunk, "x")
    assert not prepared.general, "string/int/bool attributes are rendered by Arrow kernels, not SQL"


def test_real_triton_capture_gives_identical_rows():
    files = sorted((CAPTURE / "otlp").glob("*.json"))
    chunk = b"".join(f.read_bytes().rstrip(b"\n") + b"\n" for f in files)
    assert chunk.count(b"\n") == len(files)  # one request per file, one line each
    store = _arrow_store(chunk)
    assert store is not None and _same(chunk, store=store)
    # the queue/compute events that stage attribution reads are there
    assert store.scalar("SELECT count(*) FROM span_events WHERE name = 'QUEUE_START'") > 0


def _sdk_lines(make) -> bytes:
    """OTLP JSON lines, as the Collector's file exporter writes them, of spans made with the real SDK."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from triage.sample_traces.generate import _hex_ids

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gw", "service.instance.id": "gw-1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    make(provider.get_tracer("t"))
    spans = exporter.get_finished_spans()
    lines = []
    for i in range(0, len(spans), 7):
        body = MessageToDict(encode_spans(spans[i:i + 7]), use_integers_for_enums=True)
        lines.append(orjson.dumps(_hex_ids(body)))
    return b"\n".join(lines) + b"\n"


COMMON = {"http.route": "/v1/x", "http.response.status_code": 200, "app.input_tokens": 512, "ok": True,
          "server.address": "triton.local", "empty": "", "unicode": "é 😀 \u2028"}
RARE = {"ratio": 0.25, "big": 1e300, "quote": 'say "hi"', "path": "C:\\x", "nl": "a\nb", "tab": "\t",
        "strs": ["a", "b"], "ints": [1, 2], "floats": [0.5], "bools": [True, False], "none": []}


def _spans(attrs: dict, event_attrs: dict):
    from opentelemetry.trace import SpanKind, StatusCode

    def make(tracer):
        for i in range(20):
            with tracer.start_as_current_span("POST /v1/x", kind=SpanKind.SERVER, attributes=attrs) as root:
                root.add_event("QUEUE_START", event_attrs)
                with tracer.start_as_current_span("tokenize", attributes={"app.input_tokens": i}):
                    pass
                with tracer.start_as_current_span("infer", kind=SpanKind.CLIENT,
                                                  attributes={"peer.service": "triton"}) as c:
                    c.add_event("COMPUTE_START")
                    if i % 3 == 0:
                        c.set_status(StatusCode.ERROR, "deadline exceeded")
    return make


def test_sdk_common_attribute_types_use_arrow_kernels():
    chunk = _sdk_lines(_spans(COMMON, {"n": 3, "s": "x"}))
    assert _same(chunk)
    assert not otlp_lines_arrow.prepare(chunk, "x").general


@pytest.mark.parametrize("key", sorted(RARE))
def test_sdk_rare_attribute_types_render_in_sql_identically(key):
    """Doubles, escapes and arrays leave the Arrow kernels' common case: DuckDB's macros render them,
    with the same text as the msgspec path."""
    chunk = _sdk_lines(_spans({**COMMON, key: RARE[key]}, {key: RARE[key]}))
    assert _same(chunk)


def _line() -> dict:
    return orjson.loads(SAMPLES[0].read_bytes().split(b"\n", 1)[0])


def _first_span(doc):
    return doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]


def _variant(change) -> bytes:
    doc = _line()
    change(doc)
    return orjson.dumps(doc) + b"\n"


REFUSED = {
    "kind as an enum name": lambda d: _first_span(d).update(kind="SPAN_KIND_SERVER"),
    "base64 trace id (Tempo)": lambda d: _first_span(d).update(traceId="AAECAwQFBgcICQoLDA0ODw=="),
    "time as a JSON number": lambda d: _first_span(d).update(startTimeUnixNano=1796029103000782629),
    "uppercase-free invalid span id": lambda d: _first_span(d).update(spanId="xyz"),
    "all-zero trace id": lambda d: _first_span(d).update(traceId="0" * 32),
    "end before start": lambda d: _first_span(d).update(endTimeUnixNano="1"),
    "event without a time": lambda d: _first_span(d).update(events=[{"name": "QUEUE_START"}]),
    "nested array value": lambda d: _first_span(d).update(attributes=[
        {"key": "a", "value": {"arrayValue": {"values": [{"arrayValue": {"values": []}}]}}}]),
    "the result wrapper": lambda d: d.update(result={"resourceSpans": d.pop("resourceSpans")}),
    "legacy instrumentationLibrarySpans": lambda d: d["resourceSpans"][0].update(
        instrumentationLibrarySpans=d["resourceSpans"][0].pop("scopeSpans")),
    "status code as a name": lambda d: _first_span(d).update(status={"code": "STATUS_CODE_ERROR"}),
    "no name": lambda d: _first_span(d).pop("name"),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_chunks_the_arrow_path_cannot_load_exactly_are_refused(what):
    chunk = _variant(REFUSED[what])
    assert _arrow(chunk) is None


def test_invalid_utf8_is_refused():
    chunk = _variant(lambda d: _first_span(d).update(name="NAME"))
    assert _arrow(chunk.replace(b"NAME", b"N\xffME")) is None


def test_refused_chunks_inside_a_large_file_load_as_the_exact_reader_loads_them(tmp_path, monkeypatch):
    """A file big enough for the Arrow path, with damaged lines in one chunk: same rows and the same
    problems (file and line) as with Arrow switched off."""
    good = SAMPLES[0].read_bytes()
    bad = _variant(REFUSED["end before start"]) + b"{not json\n" + _variant(REFUSED["kind as an enum name"])
    path = tmp_path / "big.jsonl"
    path.write_bytes(good * 12 + bad + good * 12)
    monkeypatch.setattr(otlp_lines_arrow, "CHUNK_BYTES", 4 << 20)  # several chunks, most of them clean
    assert path.stat().st_size > 4 * otlp_lines_arrow.CHUNK_BYTES

    def run():
        store = Store()
        res = ingest_paths(store, [path], workers=1)
        return _rows(store), sorted((p["path"], p["where"], p["message"]) for p in res.problems.items)

    taken = []
    real_write = otlp_lines_arrow.write
    monkeypatch.setattr(otlp_lines_arrow, "write", lambda con, p: taken.append(p.spans) or real_write(con, p))
    with_arrow = run()
    assert len(taken) >= 3, "the clean chunks went through Arrow"
    monkeypatch.setattr(otlp_lines_arrow, "prepare", lambda chunk, source: None)  # Arrow takes no chunk
    assert run() == with_arrow
    assert any(where.startswith("line ") for _, where, _ in with_arrow[1])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from _paths(v, prefix + (i,))


@functools.cache
def _base() -> dict:
    """A real line cut to its first spans, one of which carries Triton's events (callers copy it)."""
    base = _line()
    spans = base["resourceSpans"][0]["scopeSpans"][0]["spans"]
    with_events = next(sp for sp in spans if sp.get("events"))
    del spans[4:]
    spans.append(with_events)
    return base


def _edited_is_refused_or_identical(path: tuple, value) -> None:
    """Set the node at ``path`` of a copy of the base line to ``value``: the Arrow path refuses the line or
    loads exactly what the msgspec path loads, without problems."""
    doc = copy.deepcopy(_base())
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    chunk = json.dumps(doc, separators=(",", ":")).encode() + b"\n"  # orjson refuses integers beyond 64 bits
    event("taken" if _same(chunk, must_fit=False) else "refused")


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), value=JSON_VALUES)
def test_mutated_lines_are_refused_or_identical(seed, value):
    """Replace one node of a real line (anywhere in the tree) with an arbitrary JSON value: the Arrow path
    either refuses the line or loads exactly what the msgspec path loads, without problems."""
    paths = [p for p in _paths(_base()) if p]
    _edited_is_refused_or_identical(random.Random(seed).choice(paths), value)


TRICKY_TEXT = st.one_of(
    st.from_regex(r"[-+ ]?0*[0-9]{1,20}", fullmatch=True),            # times and integers, canonical or not
    st.from_regex(r"[0-9a-fA-F]{14,34}", fullmatch=True),              # ids of about the right length
    st.text(alphabet=st.characters(max_codepoint=0x2030), max_size=6),  # escapes, controls, non-ASCII
    st.sampled_from(["", "0", "-0", "1e3", "NaN", "true", "SPAN_KIND_CLIENT", "0" * 32, "0" * 16]),
)


def _leaves(doc):
    """Paths of the string and integer scalars of ``doc``."""
    for path in _paths(doc):
        node = doc
        for part in path:
            node = node[part]
        if isinstance(node, (str, int)) and not isinstance(node, bool):
            yield path


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), text=TRICKY_TEXT, as_number=st.booleans())
def test_edited_values_are_refused_or_identical(seed, text, as_number):
    """Replace one scalar of a real line (an id, a time, a kind, an attribute value or key...) with a tricky
    string, or the number it spells: refused, or the same rows as the msgspec path."""
    value = text
    if as_number:
        try:
            value = int(text)
        except ValueError:
            pass
    _edited_is_refused_or_identical(random.Random(seed).choice(list(_leaves(_base()))), value)


def test_an_arrow_failure_while_writing_leaves_nothing_and_the_exact_path_loads_the_chunk(tmp_path, monkeypatch):
    """If inserting a prepared chunk fails half-way (spans in, events not), the transaction is rolled back and
    the msgspec path loads the chunk: no duplicate, nothing lost."""
    path = tmp_path / "big.jsonl"
    path.write_bytes(SAMPLES[0].read_bytes() * 3)
    expected = Store()
    ingest_paths(expected, [path], workers=1)
    real_write = otlp_lines_arrow.write
    calls = []

    def write_then_fail(con, prepared):
        real_write(con, prepared)
        calls.append(prepared.spans)
        raise RuntimeError("disk full")

    monkeypatch.setattr(otlp_lines_arrow, "write", write_then_fail)
    store = Store()
    res = ingest_paths(store, [path], workers=1)
    assert calls, "the Arrow path was tried"
    assert res.spans == expected.scalar("SELECT count(*) FROM spans")
    assert _rows(store) == _rows(expected)
