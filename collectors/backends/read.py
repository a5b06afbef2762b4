"""One entry for every backend: a ``Source`` read into the store by the module of its scheme."""
from __future__ import annotations

from .source import Source


def ingest(store, source: Source, problems) -> dict:
    """Read a source's window into the store, replacing what an earlier read of the same URL left there (a
    ``--db`` store, a live session's last poll); returns what the report says about it (``figures``)."""
    with store.transaction() as con:
        con.execute("DELETE FROM span_events WHERE trace_id IN (SELECT trace_id FROM spans WHERE source = ?)",
                    [str(source)])
        con.execute("DELETE FROM spans WHERE source = ?", [str(source)])
    if source.scheme == "tempo":
        from .tempo import ingest as read_tempo

        return read_tempo(store, source, problems)
    if source.scheme == "jaeger":
        from .jaeger import ingest as read_jaeger

        return read_jaeger(store, source, problems)
    from .clickhouse import ingest as read_clickhouse  # clickhouse-connect / chdb are imported only here

    return read_clickhouse(store, source, problems)
