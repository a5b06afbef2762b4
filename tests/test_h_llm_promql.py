"""Live mode on an LLM server's metrics: the vllm-gateway-mixed capture's real vLLM scrapes, backfilled into a
real Prometheus with promtool and queried back through PromQL. Needs the Debian `prometheus` package (skips
without it)."""
import gzip
import subprocess
from datetime import datetime, timezone

import pytest

from conftest import VLLM_CAPTURE, need
from promserver import PROMTOOL, Prometheus, need_prometheus


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    need_prometheus()
    tmp = tmp_path_factory.mktemp("vllm-promql")
    lines, ts = [], []
    for line in gzip.decompress(need(VLLM_CAPTURE / "metrics.prom.gz").read_bytes()).decode().splitlines():
        if not line or line.startswith("#"):
            continue  # untyped: histogram_quantile needs only the le label
        name_labels, value, t = line.rsplit(" ", 2)
        ts.append(int(t))
        lines.append(f"{name_labels} {value} {int(t) / 1000:.3f}")
    (tmp / "metrics.om").write_text("\n".join(lines) + "\n# EOF\n")
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(tmp / "metrics.om"), str(tmp / "data")],
                   check=True, capture_output=True)
    server = Prometheus(tmp, storage=tmp / "data")
    try:
        yield server, min(ts), max(ts)
    finally:
        server.stop()


def test_llm_series_and_token_latency_quantiles_through_promql(prom):
    from triage.analyzers.llm import token_latency_from_metrics
    from triage.analyzers.metrics import series
    from triage.collectors.metric_catalogue import KV_USAGE, PREEMPTIONS
    from triage.collectors.prometheus import PrometheusSource
    from triage.collectors.store import Store

    server, t0, t1 = prom
    src = PrometheusSource(server.url)
    present = src.present_metrics()
    for name in ("vllm:kv_cache_usage_perc", "vllm:num_requests_waiting_by_reason", "vllm:num_preemptions_total",
                 "vllm:prefix_cache_hits_total", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:time_to_first_token_seconds_bucket"):
        assert name in present, name
    queries = dict(src.queries())
    assert queries["vllm:time_to_first_token_seconds:p99"] == (
        "histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket[1m])))")
    assert "vllm:inter_token_latency_seconds:p50" in queries
    assert "vllm:e2e_request_latency_seconds:p50" not in queries  # p95 only, as before, for other histograms
    store = Store()
    start = datetime.fromtimestamp(t0 / 1000, tz=timezone.utc)
    end = datetime.fromtimestamp(t1 / 1000, tz=timezone.utc)
    assert src.fetch(store, start, end, step_s=1) > 0
    preempt = series(store, PREEMPTIONS)
    assert preempt and preempt[0].values.max() - preempt[0].values.min() == 25  # the capture README's 0 -> 25
    kv = series(store, KV_USAGE)
    assert kv and kv[0].values.max() == 1.0
    figures = token_latency_from_metrics(store)["tiny-llama"]
    assert figures["ttft_source"].startswith("metrics vllm:time_to_first_token_seconds (median")
    assert figures["itl_source"].startswith("metrics vllm:inter_token_latency_seconds (median")
    assert 0 < figures["ttft_p50_ms"] <= figures["ttft_p95_ms"] <= figures["ttft_p99_ms"]
    assert 0 < figures["itl_p50_ms"] <= figures["itl_p95_ms"]
