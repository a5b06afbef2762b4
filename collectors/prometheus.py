"""Prometheus (or Thanos, Mimir, VictoriaMetrics: the same HTTP API) as a live metrics source.

Queries go through prometheus-api-client as range queries with the aggregation pushed down to the server
(``sum by``/``avg by`` over the labels the rules need, ``histogram_quantile`` over ``rate`` for latency
histograms), so triage pulls a handful of series however many pods export them. Results land in the
``samples`` table under the metric's own name, exactly as if they had been read from a file.

Credentials come from the environment or a file, never from the command line, and are never logged:
TRIAGE_PROMETHEUS_BEARER_TOKEN[_FILE], TRIAGE_PROMETHEUS_USERNAME + TRIAGE_PROMETHEUS_PASSWORD[_FILE].
TLS certificates are verified; TRIAGE_PROMETHEUS_CA (or ``ca_file``) names a custom CA bundle.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# metric name -> PromQL with the aggregation pushed down ({m} is the metric name)
SUM_BY_MODEL = "sum by (model, version) ({m})"
AVG_BY_GPU = "avg by (gpu, UUID, Hostname, modelName) ({m})"
KNOWN: dict[str, str] = {
    # Triton
    "nv_inference_request_success": SUM_BY_MODEL, "nv_inference_request_failure": "sum by (model, version, reason) ({m})",
    "nv_inference_count": SUM_BY_MODEL, "nv_inference_exec_count": SUM_BY_MODEL,
    "nv_inference_request_duration_us": SUM_BY_MODEL, "nv_inference_queue_duration_us": SUM_BY_MODEL,
    "nv_inference_compute_input_duration_us": SUM_BY_MODEL, "nv_inference_compute_infer_duration_us": SUM_BY_MODEL,
    "nv_inference_compute_output_duration_us": SUM_BY_MODEL, "nv_inference_pending_request_count": SUM_BY_MODEL,
    "nv_gpu_utilization": "avg by (gpu_uuid) ({m})", "nv_gpu_memory_total_bytes": "sum by (gpu_uuid) ({m})",
    "nv_gpu_memory_used_bytes": "sum by (gpu_uuid) ({m})", "nv_cpu_utilization": "avg({m})",
    # DCGM (new and old names)
    "DCGM_FI_DEV_GPU_UTIL": AVG_BY_GPU, "DCGM_FI_PROF_GR_ENGINE_ACTIVE": AVG_BY_GPU,
    "DCGM_FI_DEV_FB_USED": AVG_BY_GPU, "DCGM_FI_DEV_FB_FREE": AVG_BY_GPU, "DCGM_FI_DEV_GPU_TEMP": AVG_BY_GPU,
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": AVG_BY_GPU, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": AVG_BY_GPU,
    # vLLM (new and old names)
    "vllm:num_requests_waiting": "sum by (model_name) ({m})", "vllm:num_requests_running": "sum by (model_name) ({m})",
    "vllm:kv_cache_usage_perc": "avg by (model_name) ({m})", "vllm:gpu_cache_usage_perc": "avg by (model_name) ({m})",
    # TGI
    "tgi_queue_size": "sum({m})", "tgi_batch_current_size": "sum({m})",
    # TorchServe
    "ts_queue_latency_microseconds": "sum by (model_name) ({m})",
    "ts_inference_latency_microseconds": "sum by (model_name) ({m})",
}
# latency histograms: a p95 series per model, computed by the server
HISTOGRAMS: dict[str, str] = {
    "vllm:e2e_request_latency_seconds": "model_name", "vllm:time_to_first_token_seconds": "model_name",
    "vllm:request_queue_time_seconds": "model_name", "tgi_request_queue_duration": "",
    "request_preprocess_seconds": "model_name", "request_predict_seconds": "model_name",
    "request_postprocess_seconds": "model_name",
}


class PrometheusError(RuntimeError):
    """Prometheus could not be queried; the message is the reason shown as 'stale: ...'."""


@dataclass(frozen=True)
class Credentials:
    bearer: str | None = None
    basic: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never print secrets
        kind = "bearer" if self.bearer else "basic" if self.basic else "none"
        return f"Credentials({kind}, ***)"

    @staticmethod
    def from_env(env=os.environ) -> "Credentials":
        def read(name: str) -> str | None:
            if env.get(name):
                return env[name]
            path = env.get(f"{name}_FILE")
            return Path(path).read_text().strip() if path else None

        token = read("TRIAGE_PROMETHEUS_BEARER_TOKEN")
        user = env.get("TRIAGE_PROMETHEUS_USERNAME")
        password = read("TRIAGE_PROMETHEUS_PASSWORD")
        return Credentials(token, (user, password or "") if user else None)


class PrometheusSource:
    def __init__(self, url: str, credentials: Credentials | None = None, ca_file: str | None = None,
                 timeout_s: float = 10.0, rediscover_s: float = 60.0):
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        creds = credentials or Credentials.from_env()
        session = requests.Session()
        session.verify = ca_file or os.environ.get("TRIAGE_PROMETHEUS_CA") or True
        headers = {"Authorization": f"Bearer {creds.bearer}"} if creds.bearer else None
        # no hidden retries: the live loop retries with its own backoff and says the data is stale meanwhile
        self._pc = PrometheusConnect(url=self.url, headers=headers, auth=creds.basic, session=session,
                                     retry=Retry(total=0), timeout=timeout_s)
        self._present: set[str] | None = None
        self._present_at = 0.0
        self.rediscover_s = rediscover_s  # how long the list of known series present is trusted
        self.rediscover_empty_s = min(rediscover_s, 10.0)  # ... when it is empty

    def _call(self, fn, *args, **kwargs):
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise PrometheusError(f"TLS verification failed for {self.url}: {exc.__class__.__name__}") from exc
        except requests.exceptions.Timeout as exc:
            raise PrometheusError(f"{self.url} did not answer in time") from exc
        except requests.exceptions.ConnectionError as exc:
            if "timed out" in str(exc).lower():  # with retries off, urllib3 wraps read timeouts this way
                raise PrometheusError(f"{self.url} did not answer in time") from exc
            raise PrometheusError(f"{self.url} is unreachable") from exc
        except ValueError as exc:  # the client raises ValueError-like errors on garbage bodies
            raise PrometheusError(f"{self.url} answered something that is not Prometheus JSON: {exc}") from exc
        except Exception as exc:  # PrometheusApiClientException: HTTP status and body
            raise PrometheusError(f"{self.url}: {str(exc)[:200]}") from exc

    def present_metrics(self) -> set[str]:
        names = self._call(self._pc.all_metrics)
        if not isinstance(names, list):
            raise PrometheusError(f"{self.url}: unexpected answer to the metric name list")
        wanted = set(KNOWN) | {f"{h}_bucket" for h in HISTOGRAMS}
        self._present = {n for n in names if n in wanted}
        self._present_at = time.monotonic()
        return self._present

    def queries(self) -> list[tuple[str, str]]:
        """(stored metric name, PromQL) for every known metric the server has."""
        # asked again every rediscover_s (an exporter that started later), sooner while none are known (a
        # server that has not scraped yet); a failed re-ask keeps the list already known
        age = time.monotonic() - self._present_at
        if self._present is None or age >= (self.rediscover_s if self._present else self.rediscover_empty_s):
            try:
                self.present_metrics()
            except PrometheusError:
                if not self._present:
                    raise
        present = self._present
        out = [(m, q.format(m=m)) for m, q in KNOWN.items() if m in present]
        for h, by in HISTOGRAMS.items():
            if f"{h}_bucket" in present:
                labels = f"le, {by}" if by else "le"
                out.append((f"{h}:p95", f"histogram_quantile(0.95, sum by ({labels}) (rate({h}_bucket[1m])))"))
        return out

    def fetch(self, store, start: datetime, end: datetime, step_s: float) -> int:
        """Replace the samples of this source in [start, end] with fresh query results; returns the count."""
        ts, names, labels, values = [], [], [], []
        for metric, promql in self.queries():
            result = self._call(self._pc.custom_query_range, promql, start_time=start, end_time=end,
                                step=f"{max(step_s, 1):g}s")
            if not isinstance(result, list):
                raise PrometheusError(f"{self.url}: unexpected answer to {promql}")
            for series in result:
                lab = {k: str(v) for k, v in (series.get("metric") or {}).items() if k != "__name__"}
                for t, v in series.get("values") or []:
                    try:
                        ts.append(int(round(float(t) * 1000)))
                        values.append(float(v))
                    except (TypeError, ValueError):
                        continue
                    names.append(metric)
                    labels.append(lab)
        source = f"prometheus {self.url}"
        store.execute("DELETE FROM samples WHERE source = ? AND ts_ms BETWEEN ? AND ?",
                      [source, _ms(start) - 1000, _ms(end) + 1000])  # the client rounds the range to seconds
        return store.insert_samples(ts, names, labels, values, source=source)


def _ms(d: datetime) -> int:
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return int(d.timestamp() * 1000)
