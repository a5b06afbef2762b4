"""Dynamic batching remediation for TorchServe, the same steps as ``batching.py`` for Triton. What: propose
``batch_size``, ``max_batch_delay`` and the worker count of a registered model from the measured arrival
rate and compute time, with the same arithmetic. Why: TorchServe's batching lives in the model's
registration, not in a file, so it is changed (and rolled back) through the management API. Fix: register
the model again with the new values (unregister, register), record it in the ledger; ``triage rollback``
registers it again with the values before, when the registration is still the one the change made. The
server may or may not have been started by triage (``lab/torchserve.py`` starts a real one for the tests)."""
from __future__ import annotations

from pathlib import Path

import requests

from . import ledger

KIND = "batching-torchserve"  # the ledger action of a TorchServe batching change


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


class TorchServeBatching:
    """The batching interface for one registered TorchServe model (same steps as batching.py for Triton)."""

    def __init__(self, server: Management, name: str, mar: str):
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
        entry = ledger.rooted_entry(KIND, beside, model=self.name, mar=self.mar,
                                    management=self.server.management, before=proposal["before"],
                                    after=proposal["after"], arithmetic=proposal["arithmetic"],
                                    rollback="register the model again with the 'before' settings")
        ledger.record(entry, beside, store)
        return entry

    def rollback(self, entry: dict, beside: Path, store=None) -> dict:
        if self.server.describe(self.name) != {**entry["after"]}:
            raise RuntimeError(f"{self.name}'s registration changed since {entry['id']}; refusing to roll back")
        self._set(entry["before"])
        return ledger.record_rollback(entry["id"], beside, store, restored=entry["before"])


_SETTINGS = {"batch_size", "max_batch_delay_ms", "workers"}


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """``triage rollback`` of a TorchServe batching change: after ``ledger.guard``, and only when the model's
    registration is still exactly the one the change made, register it again with the settings before."""
    from urllib.parse import urlsplit

    e = ledger.find(entry_id, ledger_path)
    if e is None or e.get("action") != KIND:
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


def undone(entry: dict, out: dict) -> str:
    before = ", ".join(f"{k} {v}" for k, v in out["restored"].items())
    return f"registered {entry['model']} again with {before}"
