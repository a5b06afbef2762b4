"""Start and stop a real TorchServe on loopback (its Java frontend and Python workers in one process group)
and archive an ONNX model for it with an ONNX Runtime handler, so the TorchServe batching fix
(``remediations/torchserve.py``) can be exercised against the real server. The server is also that fix's
management API, for the models it serves."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from triage.remediations.torchserve import Management

from . import procs
from .procs import free_port, wait_ready

HANDLER = '''import json, os
import numpy as np


class _ONNX:
    sess = None


def handle(data, context):
    """ONNX Runtime on the model in the archive; one output per request of the batch."""
    if _ONNX.sess is None:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        d = context.system_properties.get("model_dir")
        _ONNX.sess = ort.InferenceSession(os.path.join(d, "model.onnx"), sess_options=so,
                                          providers=["CPUExecutionProvider"])
    if data is None:
        return None
    out = []
    for row in data:
        body = row.get("body") or row.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        ids = np.asarray([body["ids"]], dtype=np.int64)
        out.append({"logits": _ONNX.sess.run(None, {"IDS": ids})[0][0].tolist()})
    return out
'''


def available() -> str | None:
    if shutil.which("java") is None:
        return "java is not installed (TorchServe's frontend needs Java 17)"
    if shutil.which("torchserve", path=str(Path(sys.executable).parent)) is None and shutil.which("torchserve") is None:
        return "torchserve is not installed (pip install torchserve torch-model-archiver pyyaml psutil)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


class TorchServe(procs.Server, Management):
    """A TorchServe on free loopback ports, its model store in ``workdir`` (a new temporary folder, removed
    on ``stop``, when none is given)."""

    def __init__(self, workdir: Path | None = None):
        self.work = Path(workdir or tempfile.mkdtemp(prefix="triage-torchserve-"))
        self.workdir = None if workdir else self.work  # a folder we made is ours to remove (procs.Server.stop)
        self.store = self.work / "store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.ports = {k: free_port() for k in ("inference", "management", "metrics")}
        self.url = f"http://127.0.0.1:{self.ports['inference']}"
        self.management = f"http://127.0.0.1:{self.ports['management']}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> "TorchServe":
        cfg = self.work / "config.properties"
        cfg.write_text("\n".join([
            f"inference_address={self.url}", f"management_address={self.management}",
            f"metrics_address=http://127.0.0.1:{self.ports['metrics']}", "disable_token_authorization=true",
            "enable_model_api=true", "install_py_dep_per_model=false", f"model_store={self.store}", ""]))
        self._log = open(self.work / "torchserve.log", "wb")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        # its own process group (procs.popen): java is a grandchild, stopped with the group
        self.proc = procs.popen([_exe("torchserve"), "--start", "--foreground", "--ncs", "--model-store",
                                 str(self.store), "--ts-config", str(cfg)], stdout=self._log,
                                stderr=subprocess.STDOUT, cwd=self.work, env=env)
        wait_ready(self.proc, f"{self.url}/ping", "torchserve", self._log.name, timeout_s, self.stop)
        return self

    def archive(self, onnx_model: Path, name: str = "clf") -> str:
        handler = self.work / "onnx_handler.py"
        handler.write_text(HANDLER)
        subprocess.run([_exe("torch-model-archiver"), "--model-name", name, "--version", "1.0", "--serialized-file",
                        str(onnx_model), "--handler", str(handler), "--export-path", str(self.store), "-f"],
                       check=True, capture_output=True)
        return f"{name}.mar"
