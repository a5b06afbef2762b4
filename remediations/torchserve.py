"""TorchServe behind the same batching interface as Triton: its batching lives in the model's registration
(``batch_size``, ``max_batch_delay`` in ms) and changes through the management API (unregister, register
again with the new values). Also: start/stop a real TorchServe on loopback with an ONNX Runtime handler."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from . import ledger
from triage.lab import procs
from triage.lab.procs import free_port, wait_ready

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


class Management:
    """TorchServe's management API at ``url``: what batching changes (and ``triage rollback``) need, whether
    or not triage started the server."""

    def __init__(self, url: str):
        self.management = url.rstrip("/")

    def register(self, mar: str, batch_size: int, max_batch_delay_ms: int, workers: int = 1) -> None:
        r = requests.post(f"{self.management}/models", params={
            "url": mar, "batch_size": batch_size, "max_batch_delay": max_batch_delay_ms,
            "initial_workers": workers, "synchronous": "true"}, timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"register {mar}: {r.status_code} {r.text[:200]}")

    def unregister(self, name: str) -> None:
        requests.delete(f"{self.management}/models/{name}", timeout=60)

    def describe(self, name: str) -> dict:
        d = requests.get(f"{self.management}/models/{name}", timeout=10).json()[0]
        return {"batch_size": d["batchSize"], "max_batch_delay_ms": d["maxBatchDelay"], "workers": len(d["workers"])}


class TorchServe(Management):
    def __init__(self, workdir: Path | None = None):
        self._made = workdir is None  # a folder we made is ours to remove
        self.work = Path(workdir or tempfile.mkdtemp(prefix="triage-torchserve-"))
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

    def stop(self) -> None:
        """Stop the launcher and the Java frontend and Python workers it started (the whole process group);
        remove the folder it ran in when we made it."""
        procs.terminate(self.proc, 30)
        if getattr(self, "_log", None):
            self._log.close()
        if self._made:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class TorchServeBatching:
    """The batching interface for one registered TorchServe model (same steps as batching.py for Triton)."""

    def __init__(self, server: TorchServe, name: str, mar: str):
        self.server, self.name, self.mar = server, name, mar

    def current(self) -> dict:
        d = self.server.describe(self.name)
        return {"max_batch_size": d["batch_size"], "window_us": d["max_batch_delay_ms"] * 1000, "instances": d["workers"]}

    def propose(self, measured):
        from .batching import decide

        cur = self.current()
        window_us, preferred, instances, lines = decide(cur["max_batch_size"], cur["window_us"], cur["instances"], measured)
        new = {"batch_size": max(cur["max_batch_size"], preferred), "max_batch_delay_ms": window_us // 1000,
               "workers": instances}
        lines.append("TorchServe takes whole milliseconds: max_batch_delay = "
                     f"{window_us} µs → {new['max_batch_delay_ms']} ms")
        return {"before": {"batch_size": cur["max_batch_size"], "max_batch_delay_ms": cur["window_us"] // 1000,
                           "workers": cur["instances"]}, "after": new, "arithmetic": lines}

    def _set(self, s: dict) -> None:
        self.server.unregister(self.name)
        self.server.register(self.mar, s["batch_size"], s["max_batch_delay_ms"], s["workers"])

    def apply(self, proposal: dict, beside: Path, store=None) -> dict:
        """Register again with the new settings; the ledger entry (in ``beside`` and the global ledger) holds
        what ``triage rollback`` needs: the management URL, the archive, the settings before and after."""
        self._set(proposal["after"])
        entry = ledger.rooted_entry("batching-torchserve", beside, model=self.name, mar=self.mar,
                                    management=self.server.management, before=proposal["before"],
                                    after=proposal["after"], arithmetic=proposal["arithmetic"],
                                    rollback="register the model again with the 'before' settings")
        ledger.record(entry, beside, store)
        return entry

    def rollback(self, entry: dict, beside: Path, store=None) -> dict:
        if self.server.describe(self.name) != {**entry["after"]}:
            raise RuntimeError(f"{self.name}'s registration changed since {entry['id']}; refusing to roll back")
        self._set(entry["before"])
        out = ledger.new_entry("rollback", of=entry["id"], restored=entry["before"])
        ledger.record(out, beside, store)
        return out


_SETTINGS = {"batch_size", "max_batch_delay_ms", "workers"}


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """``triage rollback`` of a TorchServe batching change: after ``ledger.guard``, and only when the model's
    registration is still exactly the one the change made, register it again with the settings before."""
    from urllib.parse import urlsplit

    e = ledger.find(entry_id, ledger_path)
    if e is None or e.get("action") != "batching-torchserve":
        raise RuntimeError(f"no TorchServe batching change {entry_id!r} in the ledger")
    try:
        root = ledger.guard(e, ledger_path)
    except ledger.LedgerError as exc:
        raise RuntimeError(str(exc)) from None
    url, name, mar = e.get("management"), e.get("model"), e.get("mar")
    if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname):
        raise RuntimeError(f"entry {entry_id}: management {url!r} is not an http(s) URL")
    if not (isinstance(name, str) and name and "/" not in name and isinstance(mar, str) and mar):
        raise RuntimeError(f"entry {entry_id}: model or archive name missing or malformed")
    for key in ("before", "after"):
        v = e.get(key)
        if not (isinstance(v, dict) and set(v) == _SETTINGS and all(isinstance(x, int) for x in v.values())):
            raise RuntimeError(f"entry {entry_id}: {key!r} is not {{batch_size, max_batch_delay_ms, workers}}")
    try:
        return TorchServeBatching(Management(url), name, mar).rollback(e, root, store)
    except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
        raise RuntimeError(f"TorchServe management API at {url} for {name}: {type(exc).__name__}") from None
