"""The one list of remediations, by the ledger action each one's apply writes. What a remediation is (the
``Remediation`` protocol, ``RemediationError``) is in base.py, which the fixes import; this module imports the
fixes, so a new fix is one module implementing the protocol plus one entry here."""
from __future__ import annotations

from . import batching, engine_args, quantize, torchserve
from .base import Remediation, RemediationError  # noqa: F401 (re-exported for callers of the registry)


def by_kind() -> dict[str, Remediation]:
    """Every remediation, by the ledger action its apply writes."""
    return {fix.KIND: fix for fix in (quantize, batching, torchserve, engine_args)}
