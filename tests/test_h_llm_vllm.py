"""A real vLLM server (CPU build, the lab's tiny Llama; `make vllm`), started once for this module on loopback
with its OpenTelemetry traces sent to triage's own receiver. A light load of streaming completions; triage's
TTFT and ITL, computed from the spans it received, are checked against the server's own histograms (read
from its /metrics with plain text parsing, not with triage's parser).

Skipped, with the reason, when `.venv-vllm` is not installed (`make vllm`)."""
from __future__ import annotations

import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from conftest import wait_until
from remediations import vllm_server

pytestmark = pytest.mark.skipif(vllm_server.available() is not None,
                                reason=f"real vLLM unavailable: {vllm_server.available()}")

N_REQUESTS = 16
WORDS = "the model serves tokens latency queue prefill decode cache request batch prompt answer".split()


def _scrape(url: str) -> str:
    return requests.get(url, timeout=10).text


def _families(text: str, family: str) -> dict[str, float]:
    """``{suffix+labels: value}`` of one family's samples in a /metrics text (only engine 0's series)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(family) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key[len(family):]] = float(value)
    return out


def _increase(before: str, after: str, family: str) -> dict[str, float]:
    b, a = _families(before, family), _families(after, family)
    return {k: v - b.get(k, 0.0) for k, v in a.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Start the receiver and vLLM, run the light load, wait for every request's span; yields what the tests
    read. Everything started here is stopped here."""
    from collectors.receiver import Receiver
    from collectors.store import Store

    store = Store()
    work = tmp_path_factory.mktemp("vllm-run")
    with Receiver(store, port=0) as receiver:
        server = vllm_server.VLLM(otlp_url=receiver.endpoint)
        t0 = time.monotonic()
        server.start()
        try:
            ready_s = time.monotonic() - t0
            before = _scrape(server.metrics_url)
            scrapes, stop = [], threading.Event()

            def scraper():  # the server's /metrics every 0.5 s with the scrape time (ms), as a capture would
                while not stop.is_set():
                    text, ts = _scrape(server.metrics_url), int(time.time() * 1000)
                    scrapes.append("\n".join(f"{line} {ts}" if line and not line.startswith("#") else line
                                             for line in text.splitlines()))
                    stop.wait(0.5)

            rnd = random.Random(15)
            jobs = [(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(20, 200))), rnd.randint(16, 64))
                    for _ in range(N_REQUESTS)]
            th = threading.Thread(target=scraper, daemon=True)
            th.start()
            with ThreadPoolExecutor(2) as pool:  # light: two clients, closed loop
                client = list(pool.map(lambda j: vllm_server.stream_completion(server.url, *j), jobs))
            done_at = len(scrapes)
            wait_until(lambda: len(scrapes) > done_at, 10, "a /metrics scrape after the last request")
            stop.set()
            th.join(10)
            after = _scrape(server.metrics_url)

            def received():
                return store.scalar("SELECT count(*) FROM spans WHERE name = 'llm_request'") or 0
            wait_until(lambda: received() >= N_REQUESTS, 30, f"{N_REQUESTS} llm_request spans at the receiver")
        finally:
            server.stop()
    (work / "metrics.prom").write_text("\n".join(scrapes) + "\n")
    yield {"store": store, "before": before, "after": after, "client": client, "ready_s": ready_s,
           "metrics_file": work / "metrics.prom", "jobs": jobs}


@pytest.fixture(scope="module")
def analysis(run):
    from analyzers import engine, report
    from analyzers.session import load_constraints
    from collectors.ingest import ingest_paths

    store = run["store"]
    ingested = ingest_paths(store, [run["metrics_file"]])
    cons = load_constraints([run["metrics_file"]])
    engine.prepare(store, cons)
    findings = engine.run_rules(store, cons)
    return report.build(store, ingested, findings, cons)


ROUTE = "vllm llm_request"


def test_every_request_completed_and_was_traced(run, analysis):
    assert all(c["completion_tokens"] == j[1] and c["finish_reason"] == "length"
               for c, j in zip(run["client"], run["jobs"]))
    count = _increase(run["before"], run["after"], "vllm:time_to_first_token_seconds_count")
    assert sum(count.values()) == N_REQUESTS
    assert analysis["latency"][ROUTE]["requests"] == N_REQUESTS
    assert analysis["latency"][ROUTE]["ttft_requests"] == N_REQUESTS
    print(f"vLLM ready in {run['ready_s']:.1f} s")


def test_ttft_from_spans_matches_the_server_histogram(run, analysis):
    """Every bucket of the server's TTFT histogram holds exactly the requests whose span TTFT is at or below
    its bound (the same measurement, seen twice), and the means agree."""
    store = run["store"]
    ttft = np.array([v for (v,) in store.query(
        "SELECT CAST(json_extract_string(attributes, '$.\"gen_ai.latency.time_to_first_token\"') AS DOUBLE) "
        "FROM spans WHERE name = 'llm_request'")])
    buckets = _increase(run["before"], run["after"], "vllm:time_to_first_token_seconds_bucket")
    checked = 0
    for key, count in buckets.items():
        le = float(re.search(r'le="([^"]+)"', key).group(1))
        near = np.abs(ttft - le) < 1e-6  # a value on a bound could fall either side in float
        if not near.any():
            assert count == int((ttft <= le).sum()), le
            checked += 1
    assert checked >= 10
    s = sum(_increase(run["before"], run["after"], "vllm:time_to_first_token_seconds_sum").values())
    assert ttft.mean() == pytest.approx(s / N_REQUESTS, rel=0.01, abs=1e-4)
    print(f"TTFT: span mean {ttft.mean() * 1e3:.3f} ms, histogram mean {s / N_REQUESTS * 1e3:.3f} ms, "
          f"{checked} buckets equal")
    lat = analysis["latency"][ROUTE]
    for q in (50, 95, 99):  # triage's figures are the percentiles of those same span values
        assert lat[f"ttft_p{q}_ms"] == pytest.approx(np.percentile(ttft, q) * 1e3, abs=1e-3)


def test_itl_from_spans_matches_the_server_histogram(run, analysis):
    """The server's inter-token histogram observes every gap between a request's tokens; its sum over the run
    is every request's decode time, its count every request's tokens after the first. triage's per-request
    ITL (decode / (tokens - 1)) must agree with it: exactly on the totals, and the per-request median near
    the per-token mean under a light, steady load."""
    store = run["store"]
    rows = store.query(
        "SELECT CAST(json_extract_string(attributes, '$.\"gen_ai.latency.time_in_model_decode\"') AS DOUBLE), "
        "CAST(json_extract_string(attributes, '$.\"gen_ai.usage.completion_tokens\"') AS BIGINT) "
        "FROM spans WHERE name = 'llm_request'")
    decode = sum(d for d, _ in rows)
    gaps = sum(n - 1 for _, n in rows)
    h_sum = sum(_increase(run["before"], run["after"], "vllm:inter_token_latency_seconds_sum").values())
    h_count = sum(_increase(run["before"], run["after"], "vllm:inter_token_latency_seconds_count").values())
    assert h_count == gaps
    assert decode == pytest.approx(h_sum, rel=0.01, abs=1e-3)
    lat = analysis["latency"][ROUTE]
    assert lat["itl_requests"] == N_REQUESTS
    assert lat["itl_p50_ms"] == pytest.approx(h_sum / h_count * 1e3, rel=0.35)
    assert lat["itl_p50_ms"] <= lat["itl_p95_ms"] <= lat["itl_p99_ms"]
    print(f"ITL: histogram mean {h_sum / h_count * 1e3:.3f} ms over {int(h_count)} gaps, span decode total "
          f"{decode:.4f} s vs histogram sum {h_sum:.4f} s; triage ITL p50/p95/p99 {lat['itl_p50_ms']}/"
          f"{lat['itl_p95_ms']}/{lat['itl_p99_ms']} ms; TTFT p50/p95/p99 {lat['ttft_p50_ms']}/"
          f"{lat['ttft_p95_ms']}/{lat['ttft_p99_ms']} ms")


def test_histogram_fallback_agrees_with_the_spans(run, analysis):
    """triage's figures from the scraped histograms alone (what it shows when vLLM is not traced) bracket the
    span figures: a histogram quantile is interpolated inside the bucket that holds the exact one."""
    from analyzers.llm import token_latency_from_metrics

    m = token_latency_from_metrics(run["store"])["tiny-llama"]
    assert m["ttft_source"] == "metrics vllm:time_to_first_token_seconds"
    lat = analysis["latency"][ROUTE]
    bounds = [float(re.search(r'le="([^"]+)"', k).group(1)) for k in
              _families(run["after"], "vllm:time_to_first_token_seconds_bucket")]
    bounds = sorted(b for b in bounds if np.isfinite(b))
    for q in (50, 95):
        exact, approx = lat[f"ttft_p{q}_ms"] / 1e3, m[f"ttft_p{q}_ms"] / 1e3
        i = int(np.searchsorted(bounds, exact))
        lo, hi = (bounds[i - 1] if i else 0.0), bounds[min(i, len(bounds) - 1)]
        assert lo - 1e-9 <= approx <= hi + 1e-9, (q, exact, approx, lo, hi)


def test_light_load_raises_nothing(analysis):
    bad = [(f["rule"], f["severity"], f["summary"]) for f in analysis["findings"]
           if f["severity"] in ("critical", "warning", "error")]
    assert bad == []
