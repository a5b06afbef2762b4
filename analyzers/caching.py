"""Caching, measured: how often a route's requests repeat an input seen earlier in the window.

When spans carry an input fingerprint (a hash of the request's input; attribute keys from
``[caching] fingerprint_keys`` of triage.toml, defaults below), the repeat rate is the share of requests
whose fingerprint was already seen in the window: what an unbounded cache over the window would hit. A
preprocessing cache removes preprocessing on those hits only, so the caching fix's saving on p95 is the
preprocessing saving times the repeat rate. Without a fingerprint the repeat rate is unknown, and the fix
says so instead of promising a saving.
"""
from __future__ import annotations

DEFAULT_KEYS = ("app.input_hash", "gen_ai.prompt.hash", "input.fingerprint")


def repeat_rate(store, route: str, keys=DEFAULT_KEYS) -> dict | None:
    """{"requests", "distinct", "repeat_rate", "key"} over the route's requests that carry a fingerprint
    (the first key of ``keys`` found on any span of the request), or None when none does."""
    for key in keys:
        path = '$."' + key.replace('"', '\\"') + '"'
        row = store.query("""
            WITH fp AS (
                SELECT k.trace_id, k.root_id, min(json_extract_string(s.attributes, ?)) AS fp
                FROM spans s JOIN span_roots k USING (trace_id, span_id)
                WHERE contains(s.attributes, ?) GROUP BY ALL)
            SELECT count(fp.fp), count(DISTINCT fp.fp) FROM fp JOIN requests q
              ON q.trace_id = fp.trace_id AND q.root_id = fp.root_id WHERE q.route = ?""", [path, f'"{key}"', route])[0]
        n, distinct = int(row[0] or 0), int(row[1] or 0)
        if n:
            return {"key": key, "requests": n, "distinct": distinct, "repeat_rate": round(1 - distinct / n, 4)}
    return None


def caching_fix(fix: dict, store, route: str, keys, preprocessing_saving_ms: float) -> dict:
    """The cache-preprocessing remediation, with its measured repeat rate and saving (or why unknown)."""
    rr = repeat_rate(store, route, keys)
    if rr is None:
        return {**fix, "repeat_rate": None, "saving_p95_ms": None,
                "note": f"repeat rate unknown: no input fingerprint ({', '.join(keys)}) on the spans"}
    return {**fix, "repeat_rate": rr["repeat_rate"], "fingerprint": rr,
            "saving_p95_ms": round(preprocessing_saving_ms * rr["repeat_rate"], 3),
            "note": f"{rr['repeat_rate']:.0%} of {rr['requests']} requests repeat an earlier input ({rr['key']})"}
