"""Ingest benchmark: triage vs a stdlib baseline vs DuckDB's own JSON reader, measured in one run.

    python benchmarks/ingest.py [--spans 1000000] [--duckdb-spans 100000] [--json]

Generates a realistic OTLP JSON-lines capture (benchmarks/capture.py: 6 spans per trace, attributes,
events), then runs each contender in a fresh subprocess (clean peak RSS, same file, same machine):
  triage     collectors.ingest.ingest_paths (memory-mapped chunks parsed by Arrow's threaded JSON reader,
             converted with Arrow kernels while the previous chunk is written to DuckDB)
  msgspec    the same with the Arrow path off: msgspec in worker processes, Parquet staging (the previous design)
  stdlib     json.loads per line + a Python loop building the same spans and events columns + one bulk
             insert per 50k spans (numpy columns, as triage does)
  duckdb     read_json_auto + unnest into a spans table (the whole capture unless --duckdb-spans says
             otherwise: its rate falls with size, so compare on the same file)
  analysis   ingest + stage attribution + every rule on the whole capture (time to first finding)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (self_ + kids) / 1024.0


def measure_triage(path: str) -> dict:
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    store = Store()
    t = time.perf_counter()
    res = ingest_paths(store, [path])
    return {"seconds": time.perf_counter() - t, "spans": res.spans, "problems": res.problems.count}


def measure_triage_msgspec(path: str) -> dict:
    """triage's ingest with the Arrow path switched off: msgspec in worker processes (the previous design)."""
    from triage.collectors import otlp_lines_arrow

    otlp_lines_arrow.prepare = lambda chunk, source: None  # Arrow takes no chunk: all go to the exact path
    return measure_triage(path)


def measure_analysis(path: str) -> dict:
    from triage.analyzers import engine
    from triage.sessions.offline import analyze
    from triage.collectors import checks

    early = {}
    phases = {"checks": 0.0, "stages": 0.0, "rules": 0.0}

    def timed(fn, phase):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[phase] += time.perf_counter() - t0
        return wrapper

    checks.capture_checks = timed(checks.capture_checks, "checks")
    engine.prepare = timed(engine.prepare, "stages")
    engine.run_rules = timed(engine.run_rules, "rules")
    t = time.perf_counter()

    def preliminary(a, fraction):
        early.update(seconds=time.perf_counter() - t, fraction=fraction,
                     spans=a.store.scalar("SELECT count(*) FROM spans"), first=a.findings[0].rule if a.findings else None)

    a = analyze([path], preliminary=preliminary)
    first = next((f for f in a.findings if f.severity != "info"), a.findings[0] if a.findings else None)
    return {"seconds": time.perf_counter() - t, "spans": a.ingest.spans,
            "first_finding": first.rule if first else None, "findings": [f.rule for f in a.findings],
            "preliminary": early, "phases": {k: round(v, 2) for k, v in phases.items()}}


def measure_stdlib(path: str) -> dict:
    """What a careful engineer writes without triage: stdlib json, a loop, numpy columns, bulk insert
    (Store.insert_columns turns the lists into numpy columns)."""
    from triage.collectors.store import EVENT_COLUMNS, SPAN_COLUMNS, Store

    store = Store()
    t = time.perf_counter()
    n = 0
    cols = {c: [] for c in SPAN_COLUMNS}
    evs = {c: [] for c in EVENT_COLUMNS}

    def val(v):
        for k in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if k in v:
                return v[k]
        return None

    def flush():
        store.insert_columns("spans", SPAN_COLUMNS, cols)
        store.insert_columns("span_events", EVENT_COLUMNS, evs)
        for d in (cols, evs):
            for v in d.values():
                v.clear()

    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            doc = json.loads(line)
            for rs in doc["resourceSpans"]:
                res = {kv["key"]: val(kv["value"]) for kv in rs["resource"]["attributes"]}
                rjson = json.dumps(res)
                for ss in rs["scopeSpans"]:
                    for sp in ss["spans"]:
                        attrs = {kv["key"]: val(kv["value"]) for kv in sp.get("attributes", [])}
                        start, end = int(sp["startTimeUnixNano"]), int(sp["endTimeUnixNano"])
                        row = (sp["traceId"].lower(), sp["spanId"].lower(), sp.get("parentSpanId"),
                               res.get("service.name"), sp["name"], sp.get("kind", 0), start, end, end - start,
                               (sp.get("status") or {}).get("code", 0), None, attrs.get("http.route"),
                               attrs.get("http.response.status_code"), attrs.get("http.request.resend_count"),
                               attrs.get("triton.model_name"), attrs.get("server.address"),
                               attrs.get("app.input_tokens"), json.dumps(attrs), rjson, path)
                        for c, v in zip(SPAN_COLUMNS, row):
                            cols[c].append(v)
                        for e in sp.get("events", []):
                            for c, v in zip(EVENT_COLUMNS, (row[0], row[1], e["name"], int(e["timeUnixNano"]),
                                                             json.dumps({kv["key"]: val(kv["value"]) for kv in
                                                                         e.get("attributes", [])}) or None)):
                                evs[c].append(v)
                        n += 1
            if len(cols["trace_id"]) >= 50_000:
                flush()
    flush()
    return {"seconds": time.perf_counter() - t, "spans": n}


def measure_duckdb(path: str) -> dict:
    import duckdb

    con = duckdb.connect()
    t = time.perf_counter()
    con.execute(f"""
        CREATE TABLE spans AS
        WITH lines AS (SELECT resourceSpans FROM read_json_auto('{path}', format='newline_delimited',
                                                              maximum_object_size=1073741824)),
        rs AS (SELECT unnest(resourceSpans) AS r FROM lines),
        ss AS (SELECT r.resource AS resource, unnest(r.scopeSpans) AS s FROM rs),
        sp AS (SELECT resource, unnest(s.spans) AS span FROM ss)
        SELECT span.traceId AS trace_id, span.spanId AS span_id, span.parentSpanId AS parent_span_id,
               span.name AS name, span.kind AS kind, CAST(span.startTimeUnixNano AS BIGINT) AS start_ns,
               CAST(span.endTimeUnixNano AS BIGINT) AS end_ns, to_json(span.attributes) AS attributes,
               to_json(span.events) AS events, to_json(resource) AS resource FROM sp""")
    n = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    return {"seconds": time.perf_counter() - t, "spans": n}


MEASURES = {"triage": measure_triage, "triage_msgspec": measure_triage_msgspec, "analysis": measure_analysis,
            "stdlib": measure_stdlib, "duckdb": measure_duckdb}


def run_child(which: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", which, path], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{which} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def head_lines(src: Path, dst: Path, spans: int) -> None:
    from benchmarks.capture import TRACES_PER_LINE

    lines = max(1, spans // (6 * TRACES_PER_LINE))
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for _ in range(lines):
            fo.write(fi.readline())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--duckdb-spans", type=int, default=0,
                    help="spans for the DuckDB baseline (0 = the whole capture; it takes minutes at 1M)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--measure", nargs=2, metavar=("WHICH", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        which, path = args.measure
        res = MEASURES[which](path)
        res["peak_rss_mb"] = round(_rss_mb(), 1)
        print(json.dumps(res))
        return 0

    from benchmarks.capture import write_capture

    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        cap = Path(tmp) / "capture.jsonl"
        t = time.perf_counter()
        n = write_capture(cap, args.spans)
        gen_s = time.perf_counter() - t
        size_mb = cap.stat().st_size / 1e6
        triage = run_child("triage", str(cap))
        msgspec = run_child("triage_msgspec", str(cap))
        stdlib = run_child("stdlib", str(cap))
        duck_path = cap
        if args.duckdb_spans and args.duckdb_spans < n:
            duck_path = Path(tmp) / "duckdb-subset.jsonl"
            head_lines(cap, duck_path, args.duckdb_spans)
        duck = run_child("duckdb", str(duck_path))
        analysis = run_child("analysis", str(cap))
    rate = lambda r: r["spans"] / r["seconds"]  # noqa: E731
    result = {
        "spans": n, "file_mb": round(size_mb, 1), "cores": os.cpu_count(),
        "spans_per_s": round(rate(triage)), "baseline_stdlib_spans_per_s": round(rate(stdlib)),
        "baseline_duckdb_spans_per_s": round(rate(duck)), "baseline_duckdb_spans_measured": duck["spans"],
        "peak_rss_mb": triage["peak_rss_mb"], "analysis_peak_rss_mb": analysis["peak_rss_mb"],
        "time_to_first_finding_s": round(analysis["seconds"], 2), "first_finding": analysis["first_finding"],
        "time_to_preliminary_finding_s": round(analysis["preliminary"].get("seconds", analysis["seconds"]), 2),
        "preliminary_fraction_ingested": round(analysis["preliminary"].get("fraction", 1.0), 3),
        "ingest_s": round(triage["seconds"], 2), "msgspec_path_s": round(msgspec["seconds"], 2),
        "stdlib_s": round(stdlib["seconds"], 2), "analysis_phases_s": analysis["phases"],
        "duckdb_s": round(duck["seconds"], 2), "generate_s": round(gen_s, 1),
    }
    result["x_stdlib"] = round(result["spans_per_s"] / result["baseline_stdlib_spans_per_s"], 2)
    result["x_duckdb"] = round(result["spans_per_s"] / result["baseline_duckdb_spans_per_s"], 2)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"capture: {n:,} spans, {size_mb:.0f} MB OTLP JSON lines, {os.cpu_count()} cores\n")
    print(f"{'contender':<34}{'seconds':>10}{'spans/s':>12}{'vs triage':>11}{'peak RSS MB':>13}")
    for label, r in (("triage ingest", triage), ("triage, msgspec path only", msgspec),
                     ("stdlib json + loop + bulk insert", stdlib),
                     (f"duckdb read_json_auto + unnest ({duck['spans']:,})", duck)):
        print(f"{label:<34}{r['seconds']:>10.2f}{rate(r):>12,.0f}{rate(triage) / rate(r):>10.2f}x{r['peak_rss_mb']:>13,.0f}")
    ph = analysis["phases"]
    print(f"\ntime to first finding (ingest + all rules, whole capture): {analysis['seconds']:.2f} s "
          f"→ {analysis['first_finding']}  (of which capture checks {ph['checks']:.2f} s, stage attribution "
          f"{ph['stages']:.2f} s, rules {ph['rules']:.2f} s, the preliminary pass included); peak RSS "
          f"{analysis['peak_rss_mb']:,.0f} MB")
    pre = analysis["preliminary"]
    if pre:
        print(f"time to preliminary finding (all rules on the first {pre['fraction']:.0%} of the capture, "
              f"{pre['spans']:,} spans): {pre['seconds']:.2f} s → {pre['first']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
