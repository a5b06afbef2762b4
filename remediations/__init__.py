"""Actions on artifacts (quantize/re-export, batching config, load generation, ledger). Depends on analyzers
and collectors, never on the UI. The remediations themselves arrive with issues 6 and 7; today findings
carry scored candidate fixes from ``analyzers.fixes``."""
