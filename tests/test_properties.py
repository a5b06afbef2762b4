"""Property tests over every reader: arbitrary bytes and mutated valid files yield records or a clean
problem/skip, never an exception escaping ingest."""
import gzip
import struct

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triage.collectors.ingest import IngestResult, ingest_file
from triage.collectors.parallel import Pool
from triage.collectors.store import Store
from conftest import CAPTURE, SHARED, examples

# derandomised in the suite, many random examples with HYPOTHESIS_PROFILE=fuzz (tests/conftest.py)
SETTINGS = settings(max_examples=examples(40), suppress_health_check=[HealthCheck.function_scoped_fixture])


def _seeds():
    out = {}
    for name in ("otlp_proto_example_trace.json", "jaeger_ui_genai_trace.json", "zipkin_v2_yelp_real.json"):
        out[name] = (SHARED / "traces" / name).read_bytes()
    out["body.pb"] = sorted((CAPTURE / "otlp").glob("*.pb"))[0].read_bytes()
    out["metrics.prom"] = (CAPTURE / "metrics.prom").read_bytes()[:4000]
    out["lines.jsonl"] = (CAPTURE / "otlp" / "00000-v1_traces.json").read_bytes()[:20000]
    out["api.json"] = orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "x"}, "values": [[1, "1"], [2, "2"]]}]}})
    body = out["body.pb"]
    out["framed.binpb"] = struct.pack(">I", len(body)) + body
    out["gz.json.gz"] = gzip.compress(out["otlp_proto_example_trace.json"])
    return out


SEEDS = _seeds()
POOL = Pool(1)


def _run(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    res = IngestResult()
    store = Store()
    ingest_file(store, p, res, POOL)  # must not raise
    # accounted for: read (its row in `inputs` says what it gave) or skipped with a reason, never both or neither
    assert (res.files, len(res.skipped)) in ((1, 0), (0, 1)), (res.files, res.skipped)
    assert all(s["path"] == str(p) and s["reason"] for s in res.skipped)
    assert store.query("SELECT spans, samples, problems FROM inputs") == (
        [(res.spans, res.samples, res.problems.count)] if res.files else [])
    assert all(x["path"] in (str(p), "(capture)") for x in res.problems.items)
    return res


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(tmp_path, data):
    _run(tmp_path, "x.bin", data)


@SETTINGS
@given(seed=st.sampled_from(sorted(SEEDS)), cut=st.floats(0, 1), flips=st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6), insert=st.binary(max_size=16))
def test_mutated_valid_files(tmp_path, seed, cut, flips, insert):
    data = bytearray(SEEDS[seed])
    for where, byte in flips:
        if data:
            data[int(where * (len(data) - 1))] = byte
    pos = int(cut * len(data))
    data = bytes(data[:pos]) + insert + bytes(data[pos:])
    _run(tmp_path, seed, data)


@SETTINGS
@given(seed=st.sampled_from(sorted(SEEDS)), frac=st.floats(0, 1))
def test_truncations_keep_a_prefix_of_the_records(tmp_path, seed, frac):
    whole = _run(tmp_path, "w-" + seed, SEEDS[seed])
    part = _run(tmp_path, "p-" + seed, SEEDS[seed][: int(len(SEEDS[seed]) * frac)])
    assert part.spans <= whole.spans and part.samples <= whole.samples
