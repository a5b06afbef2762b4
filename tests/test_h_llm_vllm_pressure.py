"""A real vLLM pushed into KV-cache pressure (DESIGN.md §10's recipe: 12 KV blocks of 128 tokens,
--max-num-seqs 8, no prefix caching, 16 concurrent prompts of 300-800 tokens): requests wait for KV capacity
and get preempted. triage's queue / prefill / decode stages, carved from the spans it received, must add up
to what the server's own histograms observed, and the tail must be the engine's queue.

Skipped, with the reason, when `.venv-vllm` is not installed (`make vllm`)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from h_llm_lab import analyse, families, increase, jobs, need_vllm, run_load

pytestmark = need_vllm

N = 32
ROUTE = "vllm llm_request"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_load(tmp_path_factory.mktemp("vllm-pressure"), jobs(N, (300, 800), (48, 96), seed=7),
                    concurrency=16, num_gpu_blocks=12, max_num_seqs=8, prefix_caching=False)


@pytest.fixture(scope="module")
def analysis(run):
    return analyse(run)


def _max_over_scrapes(run, family: str) -> float:
    return max((v for text in run["scrapes"] for v in families(text, family).values()), default=0.0)


def test_the_server_was_under_kv_pressure(run):
    """The scenario itself, from the server's metrics: requests waited for capacity, some were preempted."""
    preempted = sum(increase(run["before"], run["after"], "vllm:num_preemptions_total").values())
    waiting = _max_over_scrapes(run, "vllm:num_requests_waiting{")
    kv = _max_over_scrapes(run, "vllm:kv_cache_usage_perc")
    print(f"preemptions {preempted:.0f}, max waiting {waiting:.0f}, max KV usage {kv:.3f}")
    assert waiting > 0 and kv > 0.9
    assert all(c["completion_tokens"] == j[1] for c, j in zip(run["client"], run["jobs"]))


def test_engine_stages_equal_the_server_histograms(run, analysis):
    """Per stage, the sum over requests of triage's queue / prefill / decode equals the sum the server's
    request_{queue,prefill,decode}_time_seconds histograms observed; every request's stages add up to it."""
    store = run["store"]
    assert store.scalar("SELECT count(*) FROM requests WHERE route = ?", [ROUTE]) == N
    bad = store.query("""SELECT q.trace_id FROM requests q JOIN request_stages s USING (trace_id, root_id)
                         GROUP BY q.trace_id, q.duration_ns HAVING sum(s.ns) <> q.duration_ns""")
    assert bad == []
    for stage, family in (("queue", "vllm:request_queue_time_seconds_sum"),
                          ("prefill", "vllm:request_prefill_time_seconds_sum"),
                          ("decode", "vllm:request_decode_time_seconds_sum")):
        ours = (store.scalar("SELECT sum(ns) FROM request_stages WHERE stage = ?", [stage]) or 0) / 1e9
        server = sum(increase(run["before"], run["after"], family).values())
        print(f"{stage}: triage {ours:.4f} s, server {server:.4f} s")
        assert ours == pytest.approx(server, rel=0.01, abs=1e-3), stage


def test_tail_is_the_queue_and_ttft_matches_the_histogram(run, analysis):
    st = analysis["stages"][ROUTE]
    top = max(st, key=lambda s: st[s]["p95_share"])
    assert top == "queue", st
    ttft = np.array([v for (v,) in run["store"].query(
        "SELECT CAST(json_extract_string(attributes, '$.\"gen_ai.latency.time_to_first_token\"') AS DOUBLE) "
        "FROM spans WHERE name = 'llm_request'")])
    for key, count in increase(run["before"], run["after"], "vllm:time_to_first_token_seconds_bucket").items():
        le = float(re.search(r'le="([^"]+)"', key).group(1))
        if not (np.abs(ttft - le) < 1e-6).any():
            assert count == int((ttft <= le).sum()), le
    lat = analysis["latency"][ROUTE]
    assert lat["ttft_p95_ms"] == pytest.approx(np.percentile(ttft, 95) * 1e3, abs=1e-3)
    b = analysis["ttft_breakdown"][ROUTE]
    print(f"TTFT p95 {lat['ttft_p95_ms']} ms; tail of {b['cohort']}: queue {b['queue']['share']:.0%}, "
          f"prefill {b['prefill']['share']:.0%}, frontend {b['frontend']['share']:.0%}; stages {st}")
