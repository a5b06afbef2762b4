"""Quantization benchmark on the demo model: p50/p95 before and after each mode, agreement and size, in
one run, measured by the same verification code `triage quantize` uses.

    python benchmarks/quantize.py [--threads 1] [--iters 300] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from triage.lab.model import write_repo
    from triage.remediations.quantize import plan, run

    os.environ.setdefault("TRIAGE_HOME", tempfile.mkdtemp(prefix="triage-bench-home-"))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="triage-bench-q-") as tmp:
        repo = Path(tmp)
        write_repo(repo)
        for mode in ("dynamic", "static", "fp16"):
            p = plan(str(repo / "clf"), mode, calib=str(repo / "calib.npz"), threads=args.threads)
            r = run(p, apply=False, iters=args.iters)
            v = r["verification"]
            rows[mode] = {"before_p50_ms": v["before"]["p50_ms"], "before_p95_ms": v["before"]["p95_ms"],
                          "after_p50_ms": v["after"]["p50_ms"], "after_p95_ms": v["after"]["p95_ms"],
                          "speedup_p95": v["speedup_p95"], "top1_agreement": v["top1_agreement"],
                          "max_abs_diff": round(v["max_abs_diff"], 5), "size_mb_before": round(v["before"]["size_bytes"] / 1e6, 3),
                          "size_mb_after": round(v["after"]["size_bytes"] / 1e6, 3),
                          "throughput_before": v["before"]["throughput_per_s"], "throughput_after": v["after"]["throughput_per_s"],
                          "guardrails_ok": v["ok"]}
    if args.json:
        print(json.dumps({"threads": args.threads, "batch_shape": [8, 64], "modes": rows}))
        return 0
    print(f"demo model, batch 8 x 64 tokens, {args.threads} thread(s), {args.iters} runs each\n")
    print(f"{'mode':<9}{'p50 before':>11}{'p50 after':>10}{'p95 before':>11}{'p95 after':>10}{'p95 x':>7}"
          f"{'top-1':>8}{'max|d|':>8}{'MB before':>10}{'MB after':>9}")
    for mode, r in rows.items():
        print(f"{mode:<9}{r['before_p50_ms']:>11.3f}{r['after_p50_ms']:>10.3f}{r['before_p95_ms']:>11.3f}"
              f"{r['after_p95_ms']:>10.3f}{r['speedup_p95']:>7.2f}{r['top1_agreement']:>8.2%}{r['max_abs_diff']:>8.3f}"
              f"{r['size_mb_before']:>10.2f}{r['size_mb_after']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
