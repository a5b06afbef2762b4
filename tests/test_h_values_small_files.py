"""Many small files (issue 11): thousands of one-span files load as one batch, yet every span is loaded and
every file keeps its own inputs row, problems (by file and line) and --db identity. Timing is in
benchmarks/small_files.py (50,000 files); this checks behaviour."""
import gzip

import orjson

from benchmarks.small_files import one_span_requests
from triage.collectors.ingest import ingest_paths
from triage.collectors.store import Store

N = 3000


def test_thousands_of_one_span_files(tmp_path):
    cap = tmp_path / "cap"
    cap.mkdir()
    for k, req in enumerate(one_span_requests(N)):
        (cap / f"{k:05d}.json").write_bytes(req + b"\n")
    # one damaged file, one with an out-of-range value, one compressed, one large file in between
    (cap / "01000.json").write_bytes(b'{"resourceSpans": [oops\n')
    doc = orjson.loads((cap / "01001.json").read_bytes())
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "http.response.status_code", "value": {"intValue": str(2**40)}}]
    (cap / "01001.json").write_bytes(orjson.dumps(doc) + b"\n")
    (cap / "01002.json.gz").write_bytes(gzip.compress((cap / "01002.json").read_bytes()))
    (cap / "01002.json").unlink()
    big = b"".join(r + b"\n" for r in one_span_requests(N + 2000))[-(2 << 20):]
    (cap / "01500-big.jsonl").write_bytes(big[big.index(b"\n") + 1:])
    store = Store()
    res = ingest_paths(store, [cap])
    files = N + 1
    assert res.files == files == store.scalar("SELECT count(*) FROM inputs")
    assert store.scalar("SELECT count(DISTINCT source) FROM spans") == files - 1  # the damaged one has none
    small_spans = N - 1
    big_spans = store.scalar("SELECT count(*) FROM spans WHERE source LIKE '%big.jsonl'")
    assert big_spans > 1000
    assert res.spans == small_spans + big_spans == store.scalar("SELECT count(*) FROM spans")
    per_file = dict(store.query("SELECT path, problems FROM inputs WHERE problems > 0"))
    assert set(per_file) >= {str(cap / "01000.json"), str(cap / "01001.json")}
    wheres = {(x["path"], x["where"]) for x in res.problems.items}
    assert (str(cap / "01001.json"), "line 1") in wheres  # found in the shared batch, named by file and line
    assert any(path == str(cap / "01000.json") for path, _ in wheres)
    assert store.scalar("SELECT format FROM inputs WHERE path LIKE '%01002.json.gz'") == "otlp-json+gzip"
    # --db: a second run over the same store skips every file, loads nothing twice
    again = ingest_paths(store, [cap])
    assert again.files == 0 and len(again.skipped) == files
    assert store.scalar("SELECT count(*) FROM spans") == res.spans
