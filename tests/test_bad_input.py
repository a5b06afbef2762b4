"""Damaged input: never a traceback, the good records load, each problem names its file and place."""
import gzip
import json
import shutil

import orjson
import pytest

from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store
from conftest import CAPTURE, SHARED
from triage.cli.main import main

SPAN = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s", "kind": 2,
        "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000"}


def req(*spans, service="svc"):
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                               "scopeSpans": [{"spans": list(spans)}]}]}


def ingest(*paths):
    store = Store()
    return store, ingest_paths(store, list(paths))


def span(i, **kw):
    return {**SPAN, "spanId": f"{i:016x}", **kw}


def test_wrong_types_in_json_lines_keep_the_good_spans(tmp_path):
    good = [span(1), span(2)]
    bad = [span(3, kind={"x": 1}), span(4, startTimeUnixNano=[1]), span(5, attributes="nope"),
           span(6, traceId=12345)]
    p = tmp_path / "t.jsonl"
    p.write_bytes(orjson.dumps(req(*good)) + b"\n" + orjson.dumps(req(*bad)) + b"\n")
    store, res = ingest(p)
    # kind as an object and attributes as a string are tolerated (kind 0, no attributes); bad time and id are not
    assert res.spans == 4
    wheres = [x["where"] for x in res.problems.items]
    assert any(w.startswith("line 2") and "spans[1]" in w for w in wheres)
    assert any(w.startswith("line 2") and "spans[3]" in w for w in wheres)


def test_negative_duration_and_duplicates_and_orphans(tmp_path):
    p = tmp_path / "t.json"
    spans = [span(1), span(1), span(2, parentSpanId="00000000000000ff"),
             span(3, endTimeUnixNano="1544712650000000000")]
    p.write_bytes(orjson.dumps(req(*spans)))
    store, res = ingest(p)
    msgs = " | ".join(x["message"] for x in res.problems.items)
    assert "negative duration" in msgs and "duplicate span" in msgs and "orphan span" in msgs
    assert store.scalar("SELECT duration_ns FROM spans WHERE span_id = ?", [f"{3:016x}"]) == 0


def test_binary_garbage_empty_and_zero_byte_gzip(tmp_path):
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 16)
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "zero.gz").write_bytes(b"")
    (tmp_path / "empty-stream.gz").write_bytes(gzip.compress(b""))
    store, res = ingest(tmp_path)
    assert res.files == 0 and res.spans == 0
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in res.skipped}
    assert reasons["garbage.bin"] == "unknown format"
    assert reasons["empty.json"] == "empty file" and reasons["zero.gz"] == "empty file"
    assert "empty" in reasons["empty-stream.gz"]


def test_truncated_gzip_loads_what_was_decompressed(tmp_path):
    data = (CAPTURE / "metrics.prom").read_bytes()
    z = gzip.compress(data)
    (tmp_path / "m.prom.gz").write_bytes(z[: len(z) * 2 // 3])
    store, res = ingest(tmp_path)
    assert 0 < res.samples < sum(1 for l in data.decode().splitlines() if l and not l.startswith("#"))
    assert any("gzip stream damaged or truncated" in p["message"] for p in res.problems.items)


def _truncate(src, dst, fraction=0.6):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


DAMAGEABLE = [
    ("traces", "jaeger_ui_genai_trace.json"), ("traces", "otlp_jaeger_api_v3_anyvalues.json"),
    ("traces", "zipkin_v2_yelp_real.json"), ("traces", "otlp2jaeger-out.jaeger_api.json"),
    ("metrics", "real_scrapes/dcgm_datadog_fixture.prom"), ("metrics", "real_scrapes/vllm_datadog_fixture_excerpt.prom"),
    ("metrics", "real_scrapes/triton_datadog_fixture_excerpt.prom"),
]


@pytest.mark.parametrize("folder,name", DAMAGEABLE)
def test_damaged_copy_of_each_fixture_loads_its_good_part(tmp_path, folder, name):
    src = SHARED / folder / name
    _, whole = ingest(src)
    dst = tmp_path / src.name
    _truncate(src, dst)
    _, part = ingest(dst)
    good_whole = whole.spans + whole.samples
    good_part = part.spans + part.samples
    assert 0 < good_part < good_whole
    assert part.problems.count >= 1 and all(p["path"] in (str(dst), "(capture)") for p in part.problems.items)
    assert src.read_bytes()[:10] == dst.read_bytes()[:10]  # the original is untouched, the copy was read


def test_damaged_copy_of_the_real_capture(tmp_path):
    dst = tmp_path / "capture"
    shutil.copytree(CAPTURE, dst)
    for f in sorted((dst / "otlp").iterdir())[:4]:  # two Triton JSON bodies, two gateway protobuf bodies
        _truncate(f, f, 0.5)
    _, whole = ingest(CAPTURE)
    _, part = ingest(dst)
    assert 0.9 * whole.spans < part.spans < whole.spans
    damaged = {p["path"].rsplit("/", 1)[-1] for p in part.problems.items if p["path"] != "(capture)"}
    assert damaged == {f.name for f in sorted((dst / "otlp").iterdir())[:4]}


def test_strict_exits_2_on_problems(tmp_path, capsys):
    p = tmp_path / "t.jsonl"
    p.write_bytes(orjson.dumps(req(span(1))) + b"\n{broken\n")
    assert main(["report", str(p), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["inputs"]["problems"]["count"] == 1 and rep["inputs"]["problems"]["items"][0]["where"] == "line 2"
    assert main(["report", str(p), "--format", "json", "--strict"]) == 2
