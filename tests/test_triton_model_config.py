"""Triton's config.pbtxt, read and written in one module (collectors/triton_model_config.py) through the
ModelConfig protobuf: a round trip is exact, comments and field order do not matter, and the batching
remediation's write keeps every field it does not change."""
from pathlib import Path

import pytest

from triage.collectors import triton_model_config as mc

CAPTURE = Path(__file__).parent / "fixtures" / "captures" / "triton-gateway-mixed" / "config.pbtxt"

COMMENTED = '''# the classifier, served by the Python backend
instance_group [ { kind: KIND_CPU count: 2 }, { count: 1 kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]  # what the batcher aims for
  max_queue_delay_microseconds: 2500
}
output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 4 ] } ]
input [ { name: "IDS" data_type: TYPE_INT64 dims: [ -1 ] } ]
max_batch_size: 32
backend: "python"
name: "clf"   # named last
parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }
'''


def test_round_trip_is_exact():
    for text in (CAPTURE.read_text(), COMMENTED):
        cfg = mc.parse(text)
        written = mc.render(cfg)
        assert mc.parse(written) == cfg
        assert mc.render(mc.parse(written)) == written  # the written form is a fixed point


def test_comments_and_field_order_do_not_matter():
    cfg = mc.parse(COMMENTED)
    v = mc.view(cfg, "x/config.pbtxt", "folder")
    assert v == mc.BatchingConfig(model="clf", path="x/config.pbtxt", max_batch_size=32, dynamic_batching=True,
                                  max_queue_delay_us=2500, preferred_batch_sizes=[4, 8], instances=3)
    assert mc.model_name(COMMENTED, "folder") == "clf"
    assert mc.model_name("max_batch_size: 4\ninput [ { name: \"IDS\" } ]\n", "folder") == "folder"  # no model name
    assert mc.model_name("this is { not a config", "folder") == "folder"
    with pytest.raises(ValueError, match="bad/config.pbtxt"):
        mc.parse("max_batch_size: many", "bad/config.pbtxt")


def test_no_dynamic_batching_and_no_instance_group():
    v = mc.view(mc.parse('name: "m" max_batch_size: 8'), "p", "folder")
    assert (v.dynamic_batching, v.max_queue_delay_us, v.preferred_batch_sizes, v.instances) == (False, 0, [], 1)


def test_batching_write_keeps_the_fields_it_does_not_change(tmp_path):
    from triage.remediations import batching

    path = tmp_path / "clf" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text(COMMENTED)
    p = batching.propose(path, batching.Measured(arrival_rps=200.0, avg_batch=1.0, compute_ms=20.0))
    before, after = mc.parse(COMMENTED), mc.parse(p.new_text)
    changed = {"max_queue_delay_microseconds", "preferred_batch_size", "instance_group"}
    assert after.dynamic_batching.max_queue_delay_microseconds != before.dynamic_batching.max_queue_delay_microseconds
    for field, value in before.ListFields():
        if field.name == "dynamic_batching":
            for f, v in value.ListFields():
                if f.name not in changed:
                    assert getattr(after.dynamic_batching, f.name) == v, f.name
        elif field.name not in changed:
            assert getattr(after, field.name) == value, field.name
    groups = lambda cfg: [(g.kind, g.count) for g in cfg.instance_group]  # noqa: E731
    assert groups(after)[1:] == groups(before)[1:]
    assert after.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    assert p.changes["max_batch_size"] == [32, 32]


def test_ingest_names_the_model_from_the_config(tmp_path):
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.pbtxt").write_text(COMMENTED)
    store = Store()
    ingest_paths(store, [tmp_path])
    [(model, text)] = store.query("SELECT model, text FROM model_configs")
    assert (model, text) == ("clf", COMMENTED)
    assert mc.batching(store)["clf"].max_queue_delay_us == 2500
