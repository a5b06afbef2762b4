"""Prometheus (or Thanos, Mimir, VictoriaMetrics: the same HTTP API) as a live metrics source.

Queries go through prometheus-api-client as range queries with the aggregation pushed down to the server
(``sum by``/``avg by`` over the labels the rules need, ``histogram_quantile`` over ``rate`` for latency
histograms), so triage pulls a handful of series however many pods export them. Results land in the
``samples`` table under the metric's own name, exactly as if they had been read from a file.

Credentials come from the environment or a file, never from the command line (a URL with ``user:pass@`` is
refused), and are never shown: TRIAGE_PROMETHEUS_BEARER_TOKEN[_FILE], TRIAGE_PROMETHEUS_USERNAME +
TRIAGE_PROMETHEUS_PASSWORD[_FILE]; surrounding whitespace (a mounted secret's trailing newline) is removed.
Errors name the HTTP status, never a response body or a header (a proxy's 401 page may echo the request's
Authorization header), and every URL shown goes through ``redact_url``.
TLS certificates are verified; TRIAGE_PROMETHEUS_CA (or ``ca_file``) names a custom CA bundle.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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
    "vllm:num_requests_waiting_by_reason": "sum by (model_name, reason) ({m})",
    "vllm:cache_config_info": "max by (block_size, num_gpu_blocks) ({m})",
    **{m: "sum by (model_name) ({m})" for m in (
        "vllm:num_preemptions_total", "vllm:num_preemptions", "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_queries", "vllm:gpu_prefix_cache_hits", "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total", "vllm:admission_rejections_total", "vllm:spec_decode_num_drafts_total",
        "vllm:spec_decode_num_draft_tokens_total", "vllm:spec_decode_num_accepted_tokens_total")},
    "vllm:request_success_total": "sum by (model_name, finished_reason) ({m})",
    "vllm:gpu_prefix_cache_hit_rate": "avg by (model_name) ({m})",
    # TGI
    "tgi_queue_size": "sum({m})", "tgi_batch_current_size": "sum({m})", "tgi_batch_current_max_tokens": "sum({m})",
    # SGLang
    **{f"sglang:{m}": "sum by (model_name) ({m})" for m in ("num_running_reqs", "num_queue_reqs", "num_retracted_reqs")},
    **{f"sglang:{m}": "avg by (model_name) ({m})" for m in ("token_usage", "cache_hit_rate", "spec_accept_rate")},
    # TorchServe
    "ts_queue_latency_microseconds": "sum by (model_name) ({m})",
    "ts_inference_latency_microseconds": "sum by (model_name) ({m})",
}
# latency histograms: a p95 series per model, computed by the server (p50 and p99 too for TOKEN_LATENCY)
HISTOGRAMS: dict[str, str] = {
    "vllm:e2e_request_latency_seconds": "model_name", "vllm:time_to_first_token_seconds": "model_name",
    "vllm:request_queue_time_seconds": "model_name", "tgi_request_queue_duration": "",
    "vllm:inter_token_latency_seconds": "model_name", "vllm:time_per_output_token_seconds": "model_name",
    "vllm:request_prefill_time_seconds": "model_name", "vllm:request_decode_time_seconds": "model_name",
    "sglang:time_to_first_token_seconds": "model_name", "sglang:inter_token_latency_seconds": "model_name",
    "sglang:e2e_request_latency_seconds": "model_name",
    "gen_ai_server_time_to_first_token_seconds": "gen_ai_request_model",
    "gen_ai_server_time_per_output_token_seconds": "gen_ai_request_model",
    "gen_ai_server_request_duration_seconds": "gen_ai_request_model",
    "tgi_request_duration": "", "tgi_request_inference_duration": "", "tgi_request_mean_time_per_token_duration": "",
    "request_preprocess_seconds": "model_name", "request_predict_seconds": "model_name",
    "request_postprocess_seconds": "model_name",
}

# time to first token / between tokens: the LLM latency table reports their p50, p95 and p99
TOKEN_LATENCY = frozenset(h for h in HISTOGRAMS if "first_token" in h or "inter_token" in h or "per_output_token" in h)


class PrometheusError(RuntimeError):
    """Prometheus could not be queried; the message is the reason shown as 'stale: ...'."""


CREDENTIAL_VARIABLES = "TRIAGE_PROMETHEUS_USERNAME and TRIAGE_PROMETHEUS_PASSWORD (or TRIAGE_PROMETHEUS_PASSWORD_FILE)"


def redact_url(url: str) -> str:
    """``url`` as it may be shown: any ``user:password@`` replaced by ``***@`` (the one place URLs are cleaned)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def check_url(url: str) -> str:
    """The Prometheus base URL, or ValueError saying what is wrong with it (the URL redacted in the message).
    Credentials in the URL are refused: they would be visible in ``ps``, shell history and every message."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)} is not a valid URL ({exc})") from None
    if "@" in parts.netloc:
        raise ValueError(f"credentials in the URL ({redact_url(url)}) are refused: they would show in `ps`, shell "
                         f"history and logs; put them in {CREDENTIAL_VARIABLES}, or use TRIAGE_PROMETHEUS_BEARER_TOKEN")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(url)} is not an http:// or https:// URL with a host")
    return url


_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an Authorization header can carry unmangled


@dataclass(frozen=True)
class Credentials:
    bearer: str | None = None
    basic: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never print secrets
        kind = "bearer" if self.bearer else "basic" if self.basic else "none"
        return f"Credentials({kind}, ***)"

    def secrets(self) -> list[str]:
        """The secret values, so that any text shown can be checked for them."""
        import base64

        out = [self.bearer] if self.bearer else []
        if self.basic and self.basic[1]:
            out.append(self.basic[1])
            out.append(base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode("latin-1", "replace")).decode())
        return out

    @staticmethod
    def from_env(env=os.environ) -> "Credentials":
        """Read the TRIAGE_PROMETHEUS_* variables; ValueError names the variable (or file) that is unusable,
        never its value."""
        def read(name: str) -> tuple[str | None, str]:
            if env.get(name):
                return env[name].strip(), name
            path = env.get(f"{name}_FILE")
            if not path:
                return None, name
            return Path(path).read_text().strip(), f"{name}_FILE ({path})"

        token, where = read("TRIAGE_PROMETHEUS_BEARER_TOKEN")
        if token is not None and not _TOKEN.fullmatch(token):
            raise ValueError(f"{where}: the token is empty or holds a space, line break or other character an "
                             f"HTTP header cannot carry (value not shown)")
        user = (env.get("TRIAGE_PROMETHEUS_USERNAME") or "").strip()
        if ":" in user:
            raise ValueError("TRIAGE_PROMETHEUS_USERNAME: a user name for basic auth cannot hold ':'")
        password, where = read("TRIAGE_PROMETHEUS_PASSWORD")
        if password is not None and any(c in password for c in "\r\n\0"):
            raise ValueError(f"{where}: the password holds a line break (value not shown)")
        if password and not user:
            raise ValueError(f"{where} is set but TRIAGE_PROMETHEUS_USERNAME is not")
        return Credentials(token or None, (user, password or "") if user else None)


class PrometheusSource:
    def __init__(self, url: str, credentials: Credentials | None = None, ca_file: str | None = None,
                 timeout_s: float = 10.0, rediscover_s: float = 60.0):
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = check_url(url).rstrip("/")
        self.shown = redact_url(self.url)  # the URL in messages and in the samples' source
        creds = credentials or Credentials.from_env()
        self._secrets = creds.secrets()
        self._status: int | None = None  # HTTP status of the last answer (the client's errors carry the body)
        session = requests.Session()
        session.verify = ca_file or os.environ.get("TRIAGE_PROMETHEUS_CA") or True
        session.hooks["response"].append(self._saw)
        headers = {"Authorization": f"Bearer {creds.bearer}"} if creds.bearer else None
        # no hidden retries: the live loop retries with its own backoff and says the data is stale meanwhile
        self._pc = PrometheusConnect(url=self.url, headers=headers, auth=creds.basic, session=session,
                                     retry=Retry(total=0), timeout=timeout_s)
        self._present: set[str] | None = None
        self._present_at = 0.0
        self.rediscover_s = rediscover_s  # how long the list of known series present is trusted
        self.rediscover_empty_s = min(rediscover_s, 10.0)  # ... when it is empty

    def _saw(self, response, *args, **kwargs):
        self._status = response.status_code

    def _call(self, fn, *args, **kwargs):
        """Run a client call; every failure becomes a PrometheusError whose message holds no header value and
        no response body (a proxy's error page may echo the Authorization header back). It is raised outside
        the handler, so the client's exception (which holds the body) is not even its __context__."""
        self._status = None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (every failure is classified below)
            error = self._error(self._reason(exc))
        raise error

    def _reason(self, exc: Exception) -> str:
        import requests

        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS verification failed for {self.shown}: {exc.__class__.__name__}"
        if isinstance(exc, requests.exceptions.Timeout):
            return f"{self.shown} did not answer in time"
        if isinstance(exc, requests.exceptions.ConnectionError):
            if "timed out" in str(exc).lower():  # with retries off, urllib3 wraps read timeouts this way
                return f"{self.shown} did not answer in time"
            return f"{self.shown} is unreachable"
        if isinstance(exc, requests.exceptions.InvalidHeader):  # a ValueError whose message holds the value
            return f"{self.shown}: a credential holds characters an HTTP header cannot carry"
        if self._status is not None and self._status != 200:  # the client's error: its message holds the body
            return self._http_status()
        if isinstance(exc, ValueError):  # a body that is not JSON
            return f"{self.shown} answered something that is not Prometheus JSON ({exc.__class__.__name__})"
        return f"{self.shown}: {exc.__class__.__name__}"

    def _http_status(self) -> str:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(self._status).phrase
        except ValueError:
            phrase = ""
        hint = (" (check the TRIAGE_PROMETHEUS_* credentials)" if self._status in (401, 403) else "")
        return f"{self.shown} answered HTTP {self._status} {phrase}{hint}".rstrip()

    def _error(self, message: str) -> PrometheusError:
        """A PrometheusError, with any secret value that still found its way into the message masked."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return PrometheusError(message)

    def present_metrics(self) -> set[str]:
        names = self._call(self._pc.all_metrics)
        if not isinstance(names, list):
            raise PrometheusError(f"{self.shown}: unexpected answer to the metric name list")
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
                for q in (0.5, 0.95, 0.99) if h in TOKEN_LATENCY else (0.95,):
                    out.append((f"{h}:p{round(q * 100)}",
                                f"histogram_quantile({q}, sum by ({labels}) (rate({h}_bucket[1m])))"))
        return out

    def fetch(self, store, start: datetime, end: datetime, step_s: float) -> int:
        """Replace the samples of this source in [start, end] with fresh query results; returns the count."""
        ts, names, labels, values = [], [], [], []
        for metric, promql in self.queries():
            result = self._call(self._pc.custom_query_range, promql, start_time=start, end_time=end,
                                step=f"{max(step_s, 1):g}s")
            if not isinstance(result, list):
                raise PrometheusError(f"{self.shown}: unexpected answer to {promql}")
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
        source = f"prometheus {self.shown}"
        store.execute("DELETE FROM samples WHERE source = ? AND ts_ms BETWEEN ? AND ?",
                      [source, _ms(start) - 1000, _ms(end) + 1000])  # the client rounds the range to seconds
        return store.insert_samples(ts, names, labels, values, source=source)


def _ms(d: datetime) -> int:
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return int(d.timestamp() * 1000)
