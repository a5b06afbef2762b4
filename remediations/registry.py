"""What a remediation is, and the one list of them. A remediation is a fix that changes a system: it
proposes (what will change, nothing written), applies the change and records it in the ledger under its
``KIND``, is verified (guardrails before a quantized model is installed; the same workload measured again
after a batching change), and is rolled back from its ledger entry after ``ledger.guard``.

What each fix proposes and applies needs different inputs (a model file, a Triton config, a TorchServe
registration), so those steps keep each module's own signatures. What ``triage rollback`` and the TUI need
is the same for all, the ``Remediation`` protocol below; ``undo.py`` finds the fix for a ledger entry by its
action in ``by_kind()``, so a new fix is one module implementing the protocol, added to that list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol


class RemediationError(RuntimeError):
    """A change a remediation refuses to make or to undo, with what to do instead."""


class Remediation(Protocol):
    """A fix module: the ledger action its apply writes, the rollback of such an entry, and the sentence
    saying what that rollback undid."""

    KIND: str

    def rollback(self, entry_id: str, *, ledger_path: Path | None = None, store=None) -> dict:
        """Undo entry ``entry_id`` after ``ledger.guard``; record and return the ``rollback`` entry. Raises
        RuntimeError saying why it refuses."""

    def undone(self, entry: dict, out: dict) -> str:
        """What the rollback ``out`` of ``entry`` removed or restored, for the user."""


def by_kind() -> dict[str, Remediation]:
    """Every remediation, by the ledger action its apply writes."""
    from . import batching, engine_args, quantize, torchserve  # they import RemediationError from here

    return {fix.KIND: fix for fix in (quantize, batching, torchserve, engine_args)}
