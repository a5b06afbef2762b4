"""The ledger: every change triage makes, with what it measured before and after, the paths and content
hashes it created, and how to undo it. An append-only JSON-lines file beside the artifacts, a global copy
(so ``triage rollback ID`` finds it), and a DuckDB table when a store is in use."""
from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson

LEDGER_NAME = ".triage-ledger.jsonl"


def global_ledger() -> Path:
    home = os.environ.get("TRIAGE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state", "triage")
    return Path(home) / "ledger.jsonl"


def _append(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(orjson.dumps(entry) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def new_entry(action: str, **fields) -> dict:
    try:
        who = getpass.getuser()
    except Exception:
        who = "unknown"
    return {"id": uuid.uuid4().hex[:12], "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "who": f"{who}@{socket.gethostname()}", "action": action, **fields}


def record(entry: dict, beside: Path, store=None) -> None:
    """Append to the ledger beside the artifacts, to the global ledger, and to the store's table."""
    _append(Path(beside) / LEDGER_NAME, entry)
    if Path(beside) / LEDGER_NAME != global_ledger():
        _append(global_ledger(), entry)
    if store is not None:
        store.execute("CREATE TABLE IF NOT EXISTS remediations (id VARCHAR, ts VARCHAR, action VARCHAR, entry JSON)")
        store.execute("INSERT INTO remediations VALUES (?, ?, ?, ?)",
                      [entry["id"], entry["ts"], entry["action"], json.dumps(entry)])


def entries(path: Path | None = None) -> list[dict]:
    path = Path(path) if path else global_ledger()
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue  # a torn last line after a crash: the rest still counts
    return out


def find(entry_id: str, path: Path | None = None) -> dict | None:
    found = [e for e in entries(path) if e["id"] == entry_id]
    return found[-1] if found else None


def rolled_back(entry_id: str, path: Path | None = None) -> bool:
    return any(e.get("action") == "rollback" and e.get("of") == entry_id for e in entries(path))
