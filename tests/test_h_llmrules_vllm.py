"""The LLM rules against a real vLLM (the lab's CPU build and tiny Llama; `make vllm`), three servers started
once each for this module: a light load, a small-KV overload (DESIGN.md §10's recipe) and a `--max-num-seqs 1`
run. Each test first checks the scenario from the server's own /metrics (plain text parsing, not triage's),
then what triage ranks first.

Skipped, with the reason, when `.venv-vllm` is not installed (`make vllm`)."""
from __future__ import annotations

import pytest

from h_llm_lab import analyse, families, increase, jobs, need_vllm, run_load

pytestmark = need_vllm


def _max(run, family: str) -> float:
    return max((v for text in run["scrapes"] for v in families(text, family).values()), default=0.0)


def _firing(analysis) -> list[dict]:
    return [f for f in analysis["findings"] if f["severity"] in ("critical", "warning", "error")]


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    run = run_load(tmp_path_factory.mktemp("light"), jobs(12, (20, 200), (16, 48)), concurrency=2)
    return run, analyse(run)


@pytest.fixture(scope="module")
def kv(tmp_path_factory):
    run = run_load(tmp_path_factory.mktemp("kv"), jobs(32, (300, 800), (48, 96), seed=7), concurrency=16,
                   num_gpu_blocks=12, max_num_seqs=8, prefix_caching=False)
    return run, analyse(run)


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    # long prompts and short outputs keep the engine (not its API server) the bottleneck on 2 cores, for ~13 s
    run = run_load(tmp_path_factory.mktemp("cap"), jobs(64, (300, 800), (32, 64), seed=3), concurrency=8,
                   max_num_seqs=1)
    return run, analyse(run)


def test_light_load_has_nothing_at_warning_or_above(light):
    run, analysis = light
    # the scenario, from the server: nothing ever waited, nothing was preempted
    assert _max(run, "vllm:num_requests_waiting{") == 0
    assert sum(increase(run["before"], run["after"], "vllm:num_preemptions_total").values()) == 0
    assert [(f["rule"], f["severity"], f["summary"]) for f in _firing(analysis)] == []


def test_small_kv_overload_puts_kv_cache_pressure_first(kv):
    run, analysis = kv
    # the scenario, from the server: it preempted running sequences (a sequence found no free KV block for
    # its next token) and held requests waiting
    preempted = sum(increase(run["before"], run["after"], "vllm:num_preemptions_total").values())
    waiting = _max(run, "vllm:num_requests_waiting{")
    print(f"preemptions {preempted:.0f}, max waiting {waiting:.0f}, max KV {_max(run, 'vllm:kv_cache_usage_perc'):.3f}")
    assert preempted > 0 and waiting > 0
    first = _firing(analysis)[0]
    assert first["rule"] == "kv-cache-pressure", [(f["rule"], f["severity"]) for f in _firing(analysis)]
    assert "concurrency-cap" not in {f["rule"] for f in _firing(analysis)}


def test_max_num_seqs_1_puts_concurrency_cap_first(cap):
    run, analysis = cap
    running, waiting = _max(run, "vllm:num_requests_running{"), _max(run, "vllm:num_requests_waiting{")
    kv_max = _max(run, "vllm:kv_cache_usage_perc")
    print(f"max running {running:.0f}, max waiting {waiting:.0f}, max KV {kv_max:.3f}")
    # the scenario, from the server's own gauges: requests waited, never more than one ran, the cache had room.
    # (The running gauge is sampled between engine steps: a scrape can miss every running request, as one
    # clean-clone run did with max running 0 and max waiting 2, so it bounds the cap and does not name it.)
    assert running <= 1 and waiting >= 1 and kv_max < 0.8
    fired = _firing(analysis)
    assert fired and fired[0]["rule"] == "concurrency-cap", [(f["rule"], f["severity"]) for f in fired]
    assert fired[0]["evidence"]["cap_running"] == 1  # the server was started with --max-num-seqs 1
    assert "kv-cache-pressure" not in {f["rule"] for f in fired}
