"""Undo any change recorded in the ledger, whatever made it: a model installed by ``quantize`` (the new
version is removed), a Triton batching change (the backup is restored over the config) or a TorchServe
one (the model is registered again with the settings before). The CLI and the TUI
both come here, so each kind of change is undone by the module that made it; each passes
``ledger.guard`` first. Ledger lines that are not entries are skipped and reported in ``skipped``."""
from __future__ import annotations

from pathlib import Path

from . import ledger
from .quantize import RemediationError


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """The ledger's rollback entry; ``undone`` says what was removed or restored, ``skipped`` which ledger
    lines were unreadable (reported, never fatal)."""
    from . import batching, quantize

    found, skipped = ledger.read(ledger_path)
    found = [e for e in found if e["id"] == entry_id and e["action"] != "rollback"]
    if not found:
        where = ledger_path or ledger.global_ledger()
        extra = f" ({len(skipped)} unreadable line(s) skipped)" if skipped else ""
        raise RemediationError(f"no ledger entry {entry_id!r} in {where}{extra}")
    action = found[-1]["action"]
    if action == "batching":
        try:
            out = batching.rollback(entry_id, ledger_path=ledger_path, store=store)
        except RuntimeError as exc:
            raise RemediationError(str(exc)) from None
        # a running server reloads its model on its own (poll) or on the next load call; say so
        return {**out, "skipped": skipped,
                "undone": f"restored {out['restored']} (reload the model if the server does not poll)"}
    if action == "batching-torchserve":
        from . import torchserve

        try:
            out = torchserve.rollback(entry_id, ledger_path=ledger_path, store=store)
        except RuntimeError as exc:
            raise RemediationError(str(exc)) from None
        before = ", ".join(f"{k} {v}" for k, v in out["restored"].items())
        return {**out, "skipped": skipped, "undone": f"registered {found[-1]['model']} again with {before}"}
    if action != "quantize":
        raise RemediationError(f"{entry_id} is a {action!r} entry; `triage rollback` undoes quantize and "
                               "batching (Triton, TorchServe) changes")
    out = quantize.rollback(entry_id, ledger_path, store)
    return {**out, "skipped": skipped, "undone": f"removed {out['removed']}"}
