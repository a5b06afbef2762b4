"""Many small files load at the speed of one big one (issue 11).

Splits the spans of the OpenTelemetry SDK's JSON lines in ``sample_traces/*/otlp/triton.jsonl`` into N
files of one span each (the span with its own resource and scope, as an exporter writing one file per
request would), then times ``ingest_paths`` on the folder against the same spans as ONE file of JSON lines
(the baseline). Prints a table; the ratio is folder time / one-file time.

    python -m benchmarks.small_files --files 50000 [--keep DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def one_span_requests(n: int):
    """n one-span ExportTraceServiceRequest lines from the samples (SDK-produced), as bytes. The samples
    hold ~20,000 spans; past them they are used again with the first 4 hex digits of the trace id replaced by
    the round number (the traces stay whole and distinct)."""
    out = 0
    for rnd in range(1 << 16):
        for f in sorted(ROOT.glob("sample_traces/*/otlp/triton.jsonl")):
            for line in f.read_bytes().splitlines():
                doc = orjson.loads(line)
                for rs in doc["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        for sp in ss["spans"]:
                            if rnd:
                                sp = {**sp, "traceId": f"{rnd:04x}" + sp["traceId"][4:]}
                            yield orjson.dumps({"resourceSpans": [{"resource": rs["resource"], "scopeSpans": [
                                {"scope": ss.get("scope", {}), "spans": [sp]}]}]})
                            out += 1
                            if out >= n:
                                return


def write_files(folder: Path, n: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for k, req in enumerate(one_span_requests(n), start=1):
        (folder / f"{k:06d}-v1_traces.json").write_bytes(req + b"\n")
    return k


def timed_ingest(path: Path) -> tuple[float, int, int]:
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    store = Store()
    t = time.perf_counter()
    res = ingest_paths(store, [path])
    return time.perf_counter() - t, res.spans, res.files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="triage-small-files-"))
    try:
        folder = args.keep or tmp / "many"
        t = time.perf_counter()
        n = write_files(folder, args.files)
        gen = time.perf_counter() - t
        one = tmp / "one.jsonl"
        with open(one, "wb") as f:
            for p in sorted(folder.glob("*.json")):
                f.write(p.read_bytes())
        t_one, s_one, _ = timed_ingest(one)
        t_many, s_many, f_many = timed_ingest(folder)
        print(f"{n} one-span files (written in {gen:.1f} s)")
        print(f"| input | files | spans | seconds | ms per file | ratio to one file |")
        print(f"|---|---:|---:|---:|---:|---:|")
        print(f"| one JSON lines file | 1 | {s_one} | {t_one:.2f} | - | 1.0 |")
        print(f"| one span per file | {f_many} | {s_many} | {t_many:.2f} | {1000 * t_many / max(f_many, 1):.2f} | "
              f"{t_many / t_one:.1f} |")
        return 0 if s_many == s_one == n else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
