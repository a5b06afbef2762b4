"""ClickHouse as a source at scale (issue 18): 10M generated spans in the OTel clickhouseexporter's own table
(tests/fixtures/clickhouse/traces_table.sql) in chDB, read by triage through the same SQL a server is sent.

    python -m benchmarks.backend [--spans 10000000] [--max-spans N] [--dir /tmp/triage_bench_chdb] [--json]

Prints: time to first finding (the whole report pipeline: schema check, count, the exact headline, the sampled
transfer, stage attribution, rules), rows transferred, peak RSS of that process (chDB runs in it, so its
memory counts), the headline p95 next to the exact p95 computed in ClickHouse, and each stage's share of the
p95 tail from the sample next to the same share computed exactly in ClickHouse over every trace.

The generated traffic is a gateway in front of a model server, 6 spans per request: gateway SERVER
``POST /v1/classify`` (root) → ``preprocess`` → CLIENT ``POST /v2/models/resnet50/infer`` → triton SERVER
``InferRequest`` (with its QUEUE_START event) → ``compute`` → back in the gateway ``postprocess``; durations
drawn per trace from hashes of the trace number, with heavy tails on preprocess (5% of requests) and compute
(3%); 1% of requests answer 500. Children never overlap, so the exact stages are direct differences of span
durations (request = the root's own time, network = the call minus the callee, queue = InferRequest minus
compute), computed by ClickHouse from the stored spans. The data is generated once in its own process and
kept in --dir, its parts merged into one (as a server's background merges would leave them; unmerged, the
measured process would spend its CPU merging them); the measured run is a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DDL = ROOT / "tests" / "fixtures" / "clickhouse" / "traces_table.sql"
T0 = 1796083200  # 2026-12-01T00:00:00Z
HOUR_NS = 3600 * 10**9
SPANS_PER_TRACE = 6
STAGES = ("preprocess", "queue", "inference", "postprocess", "network", "request")


def _u(tag: str) -> str:
    """A uniform draw in [0, 1) per trace, from a hash of its number."""
    return f"((cityHash64(t, '{tag}') % 1000000) / 1000000.0)"


GENERATE = f"""
INSERT INTO otel.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
    `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`)
WITH
  toInt64(200000 + 800000 * {_u('a')}) AS a,
  toInt64(100000 + 400000 * {_u('a2')}) AS a2,
  toInt64(1000000 + 2000000 * {_u('pre')} + if({_u('pt')} < 0.05, 30000000 * {_u('pre2')}, 0)) AS pre,
  toInt64(300000 + 1000000 * {_u('n')}) AS n,
  toInt64(10000000 * {_u('q')}) AS qd,
  toInt64(3000000 + 4000000 * {_u('inf')} + if({_u('it')} < 0.03, 20000000 * {_u('inf2')}, 0)) AS comp,
  toInt64(500000 + 1000000 * {_u('post')}) AS post,
  n + qd + comp AS cd,
  toInt64({T0} * 1000000000 + t * intDiv({HOUR_NS}, {{traces}})) AS t0,
  lower(hex(cityHash64(t, 'tid1'))) || lower(hex(cityHash64(t, 'tid2'))) AS tid,
  lower(hex(cityHash64(t, 's0'))) AS s0, lower(hex(cityHash64(t, 's2'))) AS s2, lower(hex(cityHash64(t, 's3'))) AS s3,
  [t0, t0 + a, t0 + a + pre, t0 + a + pre + intDiv(n, 2), t0 + a + pre + intDiv(n, 2) + qd, t0 + a + pre + cd] AS starts,
  [a + pre + cd + post + a2, pre, cd, qd + comp, comp, post] AS durs,
  [s0, lower(hex(cityHash64(t, 's1'))), s2, s3, lower(hex(cityHash64(t, 's4'))), lower(hex(cityHash64(t, 's5')))] AS ids,
  ['', s0, s0, s2, s3, s0] AS parents,
  ['POST /v1/classify', 'preprocess', 'POST /v2/models/resnet50/infer', 'InferRequest', 'compute', 'postprocess'] AS names,
  ['SPAN_KIND_SERVER', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_CLIENT', 'SPAN_KIND_SERVER', 'SPAN_KIND_INTERNAL',
   'SPAN_KIND_INTERNAL'] AS kinds,
  ['gateway', 'gateway', 'gateway', 'triton', 'triton', 'gateway'] AS services,
  if({_u('err')} < 0.01, '500', '200') AS status
SELECT fromUnixTimestamp64Nano(toInt64(starts[k])), tid, ids[k], parents[k], '', names[k], kinds[k], services[k],
       map('service.name', services[k]), 'bench', '1',
       multiIf(k = 1, map('http.route', '/v1/classify', 'http.response.status_code', status),
               k = 3, map('url.full', 'http://triton:8000/v2/models/resnet50/infer', 'server.address', 'triton'),
               k = 4, map('triton.model_name', 'resnet50'), CAST(map(), 'Map(String, String)')),
       toUInt64(durs[k]), 'STATUS_CODE_UNSET', '',
       if(k = 4, [fromUnixTimestamp64Nano(toInt64(starts[k]))], []), if(k = 4, ['QUEUE_START'], []),
       if(k = 4, [map('triton.model_name', 'resnet50')], CAST([], 'Array(Map(String, String))')),
       [], [], [], []
FROM (SELECT number AS t FROM numbers({{traces}})) ARRAY JOIN [1, 2, 3, 4, 5, 6] AS k
"""

# The exact stage shares: per request, each stage's ns from the stored spans; the tail cohort is the requests
# at or above the p95 of the root's duration; the share is the median of stage/duration over the cohort (as
# analyzers.latency.stage_breakdown defines it). Names are this generator's.
EXACT = """
WITH per AS (
  SELECT TraceId,
         anyIf(Duration, SpanName = 'POST /v1/classify') AS d,
         anyIf(Duration, SpanName = 'preprocess') AS preprocess,
         anyIf(Duration, SpanName = 'compute') AS inference,
         anyIf(Duration, SpanName = 'InferRequest') - inference AS queue,
         anyIf(Duration, SpanName = 'postprocess') AS postprocess,
         anyIf(Duration, SpanName = 'POST /v2/models/resnet50/infer') - anyIf(Duration, SpanName = 'InferRequest') AS network,
         d - preprocess - anyIf(Duration, SpanName = 'POST /v2/models/resnet50/infer') - postprocess AS request
  FROM otel.otel_traces GROUP BY TraceId),
p AS (SELECT quantileExactInclusive(0.95)(d) AS p95 FROM per)
SELECT (SELECT p95 FROM p) / 1e6 AS p95_ms, count() AS cohort,
       quantileExactInclusive(0.5)(preprocess / d) AS preprocess, quantileExactInclusive(0.5)(queue / d) AS queue,
       quantileExactInclusive(0.5)(inference / d) AS inference, quantileExactInclusive(0.5)(postprocess / d) AS postprocess,
       quantileExactInclusive(0.5)(network / d) AS network, quantileExactInclusive(0.5)(request / d) AS request
FROM per WHERE d >= (SELECT p95 FROM p)
"""


def generate(folder: Path, spans: int) -> None:
    from chdb import session

    traces = spans // SPANS_PER_TRACE
    s = session.Session(str(folder))
    try:
        s.query("CREATE DATABASE IF NOT EXISTS otel")
        s.query(DDL.read_text() % ("otel.otel_traces", "", "MergeTree()", ""))
        have = int(s.query("SELECT count() FROM otel.otel_traces", "CSV").data().strip() or 0)
        if have != traces * SPANS_PER_TRACE:
            s.query("TRUNCATE TABLE otel.otel_traces")
            t = time.monotonic()
            s.query(GENERATE.replace("{traces}", str(traces)))
            print(f"generated {traces * SPANS_PER_TRACE:,} spans in {time.monotonic() - t:.1f} s", file=sys.stderr)
        # merge the insert's parts now, as a server's background merges would have: otherwise every process
        # that opens the folder, the measured one included, starts merging them (and is stopped before the end)
        parts = int(s.query("SELECT count() FROM system.parts WHERE database = 'otel' AND table = 'otel_traces' "
                            "AND active", "CSV").data().strip())
        if parts > 1:
            t = time.monotonic()
            s.query("OPTIMIZE TABLE otel.otel_traces FINAL")
            print(f"merged {parts} parts in {time.monotonic() - t:.1f} s", file=sys.stderr)
    finally:
        s.close()


def measure(folder: Path, max_spans: int | None) -> dict:
    from triage.collectors.backends import DEFAULT_MAX_SPANS, Source, Window
    from triage.sessions.offline import analyze

    window = Window(T0 * 10**9, T0 * 10**9 + HOUR_NS)
    source = Source(f"chdb://{folder}/otel", window, max_spans or DEFAULT_MAX_SPANS)
    t = time.monotonic()
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    a = analyze([source])
    first = time.monotonic() - t
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)  # chDB's threads included
    rep = a.report()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from chdb import session

    s = session.Session(str(folder))
    try:
        exact = json.loads(s.query(EXACT, "JSONEachRow").data().splitlines()[0])
    finally:
        s.close()
    route = "gateway POST /v1/classify"
    stages = rep["stages"].get(route, {})
    src = rep["sources"][0]
    findings = [f for f in rep["findings"] if f["severity"] in ("critical", "warning")]
    return {
        "spans_in_window": src["spans_in_window"], "max_spans": src["detail"]["max_spans"],
        "sample_rate": src["detail"]["rate"], "rows_transferred": src["detail"]["rows_transferred"],
        "mb_received": round(src["detail"]["bytes_received"] / 2**20, 1),
        "time_to_first_finding_s": round(first, 2), "cpu_s_to_first_finding": round(cpu, 2),
        "load_average_1m": round(os.getloadavg()[0], 2), "peak_rss_mb": round(rss_mb, 1),
        "first_finding": findings[0]["rule"] if findings else None,
        "headline": rep["latency"][route], "exact_p95_ms": round(exact["p95_ms"], 3),
        "sampled_p95_ms": _sampled_p95(a.store),
        "stages": {st: {"sampled_share": stages.get(st, {}).get("p95_share"), "exact_share": round(exact[st], 4)}
                   for st in STAGES},
        "tail_cohort_exact": int(exact["cohort"]),
    }


def _sampled_p95(store) -> float:
    return round(store.scalar("SELECT quantile_cont(duration_ns, 0.95) FROM requests") / 1e6, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--max-spans", type=int, default=None)
    ap.add_argument("--dir", default="/tmp/triage_bench_chdb")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = Path(args.dir)
    if args._measure:
        print(json.dumps(measure(folder, args.max_spans)))
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", f"from benchmarks.backend import generate; from pathlib import Path; "
                                          f"generate(Path({str(folder)!r}), {args.spans})"], check=True, cwd=ROOT)
    cmd = [sys.executable, "-m", "benchmarks.backend", "--dir", str(folder), "--_measure"]
    if args.max_spans:
        cmd += ["--max-spans", str(args.max_spans)]
    out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    h = res["headline"]
    print(f"{res['spans_in_window']:,} spans in the window; detail: {res['rows_transferred']:,} rows transferred "
          f"({res['mb_received']} MB) at sample rate {res['sample_rate']:.4f} (--max-spans {res['max_spans']:,})")
    print(f"time to first finding {res['time_to_first_finding_s']} s wall, {res['cpu_s_to_first_finding']} s CPU "
          f"({res['first_finding']}; load average {res['load_average_1m']} on {os.cpu_count()} cores); "
          f"peak RSS {res['peak_rss_mb']:,.0f} MB")
    print(f"p95: headline {h['p95_ms']} ms ({h['basis']}, {h['requests']:,} requests), exact in ClickHouse "
          f"{res['exact_p95_ms']} ms, from the sample alone {res['sampled_p95_ms']} ms")
    print("| stage | sampled share of p95 tail | exact share | difference (points) |")
    print("|---|---:|---:|---:|")
    for st, d in res["stages"].items():
        s = d["sampled_share"]
        diff = "–" if s is None else f"{100 * (s - d['exact_share']):+.1f}"
        print(f"| {st} | {'–' if s is None else f'{s:.1%}'} | {d['exact_share']:.1%} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
