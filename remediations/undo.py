"""Undo any change recorded in the ledger, whatever made it: a model installed by ``quantize`` (the new
version is removed), a Triton batching change (the backup is restored over the config) or a TorchServe
one (the model is registered again with the settings before). The CLI and the TUI both come here; the
remediation that made the change (``registry.by_kind()``, by the entry's action) undoes it, after
``ledger.guard``. Ledger lines that are not entries are skipped and reported in ``skipped``."""
from __future__ import annotations

from pathlib import Path

from . import ledger
from .registry import RemediationError, by_kind


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """The ledger's rollback entry; ``undone`` says what was removed or restored, ``skipped`` which ledger
    lines were unreadable (reported, never fatal)."""
    found, skipped = ledger.read(ledger_path)
    found = [e for e in found if e["id"] == entry_id and e["action"] != "rollback"]
    if not found:
        where = ledger_path or ledger.global_ledger()
        extra = f" ({len(skipped)} unreadable line(s) skipped)" if skipped else ""
        raise RemediationError(f"no ledger entry {entry_id!r} in {where}{extra}")
    entry = found[-1]
    fixes = by_kind()
    fix = fixes.get(entry["action"])
    if fix is None:
        raise RemediationError(f"{entry_id} is a {entry['action']!r} entry; `triage rollback` undoes "
                               f"{', '.join(map(repr, fixes))} entries")
    try:
        out = fix.rollback(entry_id, ledger_path=ledger_path, store=store)
    except RuntimeError as exc:
        raise RemediationError(str(exc)) from None
    return {**out, "skipped": skipped, "undone": fix.undone(entry, out)}
