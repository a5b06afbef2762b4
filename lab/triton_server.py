"""Start and stop a real NVIDIA Triton Inference Server on loopback, from the nvidia-pytriton wheel's
``tritonserver`` binary, with the Python backend (DESIGN.md §10): the backend stub is staged in a private
backend folder, ``LD_LIBRARY_PATH`` names this interpreter's libpython and the wheel's bundled libraries,
and model code finds this environment's packages through ``TRIAGE_SITE_PACKAGES``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from . import procs
from .procs import free_port

MODEL_PY = '''import os, sys
sys.path.insert(0, os.environ.get("TRIAGE_SITE_PACKAGES", ""))
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """The ONNX model next to this file, run with ONNX Runtime (one thread), one request at a time."""

    def initialize(self, args):
        import json
        import onnxruntime as ort
        params = json.loads(args["model_config"]).get("parameters", {})
        # a fixed extra cost per execution, for demo incidents that need a slower model (capacity limits)
        self.extra_s = float(params.get("extra_ms", {}).get("string_value", "0")) / 1000.0
        # a cost per request of a batch (a model that batching does not speed up: capacity 1/per_request)
        self.per_request_s = float(params.get("per_request_ms", {}).get("string_value", "0")) / 1000.0
        # a warm-up cost (lazy init, JIT, cold caches): executions in the first cold_s seconds after load
        # pay cold_ms more each
        self.cold_s = float(params.get("cold_s", {}).get("string_value", "0"))
        self.cold_extra_s = float(params.get("cold_ms", {}).get("string_value", "0")) / 1000.0
        import time
        self.loaded_at = time.monotonic()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        here = os.path.dirname(__file__)
        self.sess = ort.InferenceSession(os.path.join(here, "model.onnx"), sess_options=so,
                                         providers=["CPUExecutionProvider"])

    def execute(self, requests):
        import time
        extra = self.extra_s + self.per_request_s * len(requests)
        if self.cold_extra_s and time.monotonic() - self.loaded_at < self.cold_s:
            extra += self.cold_extra_s
        if extra:
            time.sleep(extra)
        out = []
        for r in requests:
            ids = pb_utils.get_input_tensor_by_name(r, "IDS").as_numpy()
            logits = self.sess.run(None, {"IDS": ids})[0].astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("LOGITS", logits)]))
        return out
'''


def available() -> str | None:
    """Why a real Triton cannot start here, or None when it can."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        return "nvidia-pytriton is not installed (pip install nvidia-pytriton==0.7.0)"
    if not _binary().exists():
        return f"no tritonserver binary at {_binary()}"
    return None


def _root() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def _binary() -> Path:
    return _root() / "bin" / "tritonserver"


@dataclass
class Triton(procs.Server):
    repository: Path
    model: str = "clf"
    otlp_url: str | None = None          # host:port/v1/traces of an OTLP/HTTP receiver for Triton's own traces
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    workdir: Path | None = None          # the private backend folder and log; removed by stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout_s: float = 60.0) -> "Triton":
        why = available()
        if why:
            raise RuntimeError(why)
        work = self.workdir = Path(tempfile.mkdtemp(prefix="triage-triton-"))
        backend = work / "backends" / "python"
        backend.mkdir(parents=True)
        root = _root()
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy(root / "backends" / "python" / f, backend / f)
        shutil.copy(root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" /
                    "triton_python_backend_stub", backend / "triton_python_backend_stub")
        libs = root.parent.parent / "nvidia_pytriton.libs"
        env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(
            p for p in (sysconfig.get_config_var("LIBDIR"), str(libs), os.environ.get("LD_LIBRARY_PATH")) if p),
            TRIAGE_SITE_PACKAGES=sysconfig.get_paths()["purelib"])
        cmd = [str(_binary()), f"--model-repository={self.repository}", f"--backend-directory={work / 'backends'}",
               "--http-address=127.0.0.1", f"--http-port={self.http_port}", "--grpc-address=127.0.0.1",
               f"--grpc-port={self.grpc_port}", "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
               "--allow-metrics=true", "--model-control-mode=explicit", f"--load-model={self.model}",
               # the Python backend's shared-memory regions carry a prefix of ours, so stop() can remove what a
               # killed server left in /dev/shm
               f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}"]
        if self.otlp_url:
            cmd += ["--trace-config", "mode=opentelemetry", "--trace-config", "rate=1", "--trace-config",
                    "level=TIMESTAMPS", "--trace-config", f"opentelemetry,url={self.otlp_url}",
                    "--trace-config", "opentelemetry,resource=service.name=triton"]
        self.log_path = work / "tritonserver.log"
        self._log = open(self.log_path, "wb")
        from .procs import wait_ready

        self.proc = procs.popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=work)
        wait_ready(self.proc, f"{self.url}/v2/models/{self.model}/ready", "tritonserver", str(self.log_path),
                   timeout_s, self.stop)
        return self

    def load(self, model: str | None = None) -> None:
        """Reload a model from the repository (explicit model control): picks up a changed config.pbtxt."""
        r = requests.post(f"{self.url}/v2/repository/models/{model or self.model}/load", timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"load of {model or self.model} failed: {r.status_code} {r.text[:200]}")

    def config(self, model: str | None = None) -> dict:
        return requests.get(f"{self.url}/v2/models/{model or self.model}/config", timeout=5).json()

    @property
    def _shm_prefix(self) -> str:
        return f"triage_{os.getpid()}_{self.http_port}_"

    def _after_stop(self) -> None:
        for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):  # only there when it had to be killed
            leftover.unlink(missing_ok=True)


def write_model_repository(out: Path, onnx_model: Path, max_queue_delay_us: int, max_batch_size: int = 16,
                           model: str = "clf", extra_ms: float = 0.0, cold_ms: float = 0.0,
                           cold_s: float = 0.0, per_request_ms: float = 0.0) -> Path:
    """A repository serving ``onnx_model`` through the Python backend with dynamic batching."""
    mdir = Path(out) / model
    (mdir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_model, mdir / "1" / "model.onnx")
    (mdir / "1" / "model.py").write_text(MODEL_PY)
    (mdir / "config.pbtxt").write_text(
        f'name: "{model}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        'input [ { name: "IDS" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
        'output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + (f'parameters {{ key: "extra_ms" value: {{ string_value: "{extra_ms:g}" }} }}\n' if extra_ms else "")
        + (f'parameters {{ key: "per_request_ms" value: {{ string_value: "{per_request_ms:g}" }} }}\n'
           if per_request_ms else "")
        + (f'parameters {{ key: "cold_ms" value: {{ string_value: "{cold_ms:g}" }} }}\n'
           f'parameters {{ key: "cold_s" value: {{ string_value: "{cold_s:g}" }} }}\n' if cold_ms and cold_s else ""))
    return mdir
