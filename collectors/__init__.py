"""Data in: file readers, format detection, the DuckDB store. Never imports textual or tui."""
