"""Questions over the store: stages, latency, rules, constraints, report. Never imports textual or tui."""
