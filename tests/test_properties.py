"""Property tests over every reader: arbitrary bytes and mutated valid files yield records or a clean
problem/skip, never an exception escaping ingest."""
import gzip
import struct

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.ingest import IngestResult, ingest_file
from collectors.parallel import Pool
from collectors.store import Store
from conftest import CAPTURE, SHARED

SETTINGS = settings(max_examples=int(__import__("os").environ.get("TRIAGE_HYPOTHESIS_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _seeds():
    out = {}
    for name in ("otlp_proto_example_trace.json", "jaeger_ui_genai_trace.json", "zipkin_v2_yelp_real.json"):
        p = SHARED / "traces" / name
        if p.exists():
            out[name] = p.read_bytes()
    if CAPTURE.exists():
        out["body.pb"] = next(iter(sorted((CAPTURE / "otlp").glob("*.pb")))).read_bytes()
        out["metrics.prom"] = (CAPTURE / "metrics.prom").read_bytes()[:4000]
        out["lines.jsonl"] = (CAPTURE / "otlp" / "00000-v1_traces.json").read_bytes()[:20000]
    out["api.json"] = orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "x"}, "values": [[1, "1"], [2, "2"]]}]}})
    body = out.get("body.pb", b"")
    out["framed.binpb"] = struct.pack(">I", len(body)) + body
    out["gz.json.gz"] = gzip.compress(out.get("otlp_proto_example_trace.json", b"{}"))
    return out


SEEDS = _seeds()
POOL = Pool(1)


def _run(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    res = IngestResult()
    ingest_file(Store(), p, res, POOL)  # must not raise
    assert res.spans >= 0 and res.samples >= 0
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
