"""Undo any change recorded in the ledger, whatever made it: a model installed by ``quantize`` (the new
version is removed) or a batching change (the backup is restored over the config). The CLI and the TUI
both come here, so each kind of change is undone by the module that made it."""
from __future__ import annotations

from pathlib import Path

from . import ledger
from .quantize import RemediationError


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """The ledger's rollback entry; ``undone`` says what was removed or restored."""
    from . import batching, quantize

    e = ledger.find(entry_id, ledger_path)
    if e is None:
        raise RemediationError(f"no ledger entry {entry_id!r} in {ledger_path or ledger.global_ledger()}")
    action = e.get("action")
    if action == "batching":
        try:
            out = batching.rollback(entry_id, ledger_path=ledger_path, store=store)
        except RuntimeError as exc:
            raise RemediationError(str(exc)) from None
        # a running server reloads its model on its own (poll) or on the next load call; say so
        return {**out, "undone": f"restored {out['restored']} (reload the model if the server does not poll)"}
    if "created" not in e:
        raise RemediationError(f"{entry_id} is a {action!r} entry; there is nothing to roll back")
    out = quantize.rollback(entry_id, ledger_path, store)
    return {**out, "undone": f"removed {out['removed']}"}
