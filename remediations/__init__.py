"""Fixes that change a system: quantize a model, change Triton's or TorchServe's batching. Each records
its change in the ledger and is rolled back from it (``registry.py``: the protocol they share and the one
list of them; ``undo.py``: ``triage rollback``). Depends on analyzers and collectors, never on the UI or the
lab; the candidate fixes findings carry are scored in ``analyzers.fixes``."""
