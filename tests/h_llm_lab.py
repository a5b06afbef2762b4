"""Test helper: a real vLLM (the lab's, `make vllm`) under a load, its spans received by triage and its /metrics
scraped, for the test modules that need one (each starts its own server once per module)."""
from __future__ import annotations

import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import wait_until
from triage.lab import vllm_server

WORDS = "the model serves tokens latency queue prefill decode cache request batch prompt answer".split()

need_vllm = pytest.mark.skipif(vllm_server.available() is not None,
                               reason=f"real vLLM unavailable: {vllm_server.available()}")


def jobs(n: int, words: tuple[int, int], max_tokens: tuple[int, int], seed: int = 15) -> list[tuple[str, int]]:
    """``n`` (prompt, max_tokens): prompts of ``words`` words (about one token each), drawn with ``seed``."""
    rnd = random.Random(seed)
    return [(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(*words))), rnd.randint(*max_tokens))
            for _ in range(n)]


def _scrape(url: str) -> str:
    return requests.get(url, timeout=10).text


def families(text: str, family: str) -> dict[str, float]:
    """``{suffix+labels: value}`` of one family's samples in a /metrics text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(family):
            m = _SAMPLE.match(line)
            out[m.group(1)[len(family):]] = float(m.group(2))
    return out


_SAMPLE = re.compile(r"^(\S+?(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$")  # name{labels} value [timestamp]


def increase(before: str, after: str, family: str) -> dict[str, float]:
    b, a = families(before, family), families(after, family)
    return {k: v - b.get(k, 0.0) for k, v in a.items()}


def run_load(work, load: list[tuple[str, int]], concurrency: int, **server_args) -> dict:
    """Start the receiver and vLLM (``server_args`` go to ``VLLM``), send ``load`` as streaming completions from
    ``concurrency`` closed-loop clients while scraping /metrics every 0.5 s, wait for every request's span;
    stop everything. Returns the store, the scrapes before/after, each scrape (``scrapes``, text with the
    scrape time on every sample), the metrics file written from them, the client results, ``ready_s``."""
    from triage.collectors.receiver import Receiver
    from triage.collectors.store import Store

    store = Store()
    scrapes: list[str] = []
    with Receiver(store, port=0) as receiver:
        server = vllm_server.VLLM(otlp_url=receiver.endpoint, **server_args)
        t0 = time.monotonic()
        server.start()
        try:
            ready_s = time.monotonic() - t0
            before = _scrape(server.metrics_url)
            stop = threading.Event()

            def scraper():  # the server's /metrics every 0.5 s with the scrape time (ms), as a capture would
                while not stop.is_set():
                    text, ts = _scrape(server.metrics_url), int(time.time() * 1000)
                    scrapes.append("\n".join(f"{line} {ts}" if line and not line.startswith("#") else line
                                             for line in text.splitlines()))
                    stop.wait(0.5)

            th = threading.Thread(target=scraper, daemon=True)
            th.start()
            with ThreadPoolExecutor(concurrency) as pool:
                client = list(pool.map(lambda j: vllm_server.stream_completion(server.url, *j), load))
            done_at = len(scrapes)
            wait_until(lambda: len(scrapes) > done_at, 10, "a /metrics scrape after the last request")
            stop.set()
            th.join(10)
            after = _scrape(server.metrics_url)

            def received():
                return store.scalar("SELECT count(*) FROM spans WHERE name = 'llm_request'") or 0
            wait_until(lambda: received() >= len(load), 30, f"{len(load)} llm_request spans at the receiver")
        finally:
            server.stop()
    (work / "metrics.prom").write_text("\n".join(scrapes) + "\n")
    return {"store": store, "before": before, "after": after, "client": client, "ready_s": ready_s,
            "metrics_file": work / "metrics.prom", "jobs": load, "scrapes": scrapes}


def analyse(run: dict) -> dict:
    """triage's report on what ``run_load`` gathered (its spans, and its scrapes as a metrics file)."""
    from triage.analyzers import engine, report
    from triage.sessions.offline import load_constraints
    from triage.collectors.ingest import ingest_paths

    store = run["store"]
    ingested = ingest_paths(store, [run["metrics_file"]])
    cons = load_constraints([run["metrics_file"]])
    engine.prepare(store, cons)
    return report.build(store, ingested, engine.run_rules(store, cons), cons)
