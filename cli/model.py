"""`triage quantize` and `triage rollback`: model remediations from the command line."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import emit


def register(sub) -> None:
    qz = sub.add_parser("quantize", help="quantize (or re-export) a model, verify it, install it as a new version")
    qz.add_argument("model", metavar="MODEL",
                    help="ONNX file, Triton model directory (or name with --repo), TorchScript file, or module:function")
    qz.add_argument("--mode", choices=("dynamic", "static", "fp16"), default="dynamic")
    qz.add_argument("--calib", metavar="FILE", help=".npz of real inputs for calibration and agreement")
    qz.add_argument("--capture", metavar="PATH", help="draw verification shapes from this capture's input-size mix")
    qz.add_argument("--repo", metavar="DIR", help="Triton model repository (MODEL is then a model name, "
                    "DIR/MODEL, or DIR/MODEL/N/model.onnx; anything outside DIR is an error)")
    qz.add_argument("--constraints", metavar="FILE", help="triage.toml ([guardrails])")
    qz.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the measurements")
    qz.add_argument("--dry-run", action="store_true", help="build and verify, but do not install")
    qz.add_argument("--format", choices=("md", "json"), default="md")
    qz.set_defaults(handler=cmd_quantize)
    rb = sub.add_parser("rollback", help="undo a change recorded in the ledger")
    rb.add_argument("ledger_id", metavar="LEDGER_ID")
    rb.add_argument("--ledger", metavar="FILE", help="ledger file (default: the global ledger)")
    rb.set_defaults(handler=cmd_rollback)


def _ledger_store(args):
    """With --db, the ledger also goes into that store's remediations table."""
    if not args.db:
        return None
    from triage.collectors.store import Store

    return Store(args.db)


def cmd_quantize(args) -> int:

    from triage.remediations.quantize import RemediationError, plan, run, sizes_from_capture

    from triage.sessions.offline import load_constraints

    cons = load_constraints([], args.constraints)
    sizes = None
    if args.capture:
        from triage.sessions.offline import analyze

        sizes = sizes_from_capture(analyze([args.capture]).store) or None
    try:
        p = plan(args.model, args.mode, repo=args.repo, calib=args.calib, guardrails=cons.guardrails,
                 threads=args.threads, sizes=sizes)
        result = run(p, apply=not args.dry_run, store=_ledger_store(args),
                     progress=lambda m: print(f"triage quantize: {m}", file=sys.stderr))
    except RemediationError as exc:
        print(f"triage quantize: {exc}", file=sys.stderr)
        return 2
    emit(result, args.format, _quantize_md)
    if result["applied"] or args.dry_run and result.get("reason") == "preview only":
        return 0
    return 1


def _quantize_md(r: dict) -> str:
    p, v = r["plan"], r["verification"]
    lines = [f"## triage quantize — {p['mode']}", "", f"**Change:** {p['what_changes']}", "",
             f"**Expected:** {p['expected_effect']} (risk {p['risk']}/5)", ""]
    if p["shapes"]:
        lines += [f"**Checked on input shapes:** {', '.join('x'.join(map(str, s)) for s in p['shapes'])}", ""]
    lines += [f"Note: {n}" for n in p.get("notes") or []] + ([""] if p.get("notes") else [])
    if v.get("before") and v.get("after"):
        b, a = v["before"], v["after"]
        lines += ["| | p50 ms | p95 ms | p99 ms | throughput/s | size MB | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
        for label, m in (("before", b), ("after", a)):
            lines.append(f"| {label} | {m['p50_ms']:.3f} | {m['p95_ms']:.3f} | {m['p99_ms']:.3f} | "
                         f"{m['throughput_per_s']:.0f} | {m['size_bytes'] / 1e6:.2f} | {m['peak_rss_mb']} |")
        lines += ["", f"p95 speedup {v.get('speedup_p95')}x; top-1 agreement {v['top1_agreement']:.2%}; "
                      f"max abs difference {v['max_abs_diff']:.4f}"]
    if r["applied"]:
        lines += ["", f"**Applied.** Installed {r['installed']}; ledger id `{r['ledger_id']}` "
                      f"(undo: `triage rollback {r['ledger_id']}`)."]
    else:
        lines += ["", f"**Not applied:** {r.get('reason')}"]
        for f in v.get("shape_failures") or []:
            lines.append(f"- fails on input shape {f['shape']}: {f['error']}")
    return "\n".join(lines) + "\n"


def cmd_rollback(args) -> int:
    from triage.remediations.registry import RemediationError
    from triage.remediations.undo import rollback

    from triage.remediations import ledger

    path = Path(args.ledger) if args.ledger else None
    for problem in ledger.read(path)[1]:
        print(f"triage rollback: {problem}", file=sys.stderr)
    try:
        out = rollback(args.ledger_id, path, store=_ledger_store(args))
    except RemediationError as exc:
        print(f"triage rollback: {exc}", file=sys.stderr)
        return 2
    print(f"rolled back {args.ledger_id}: {out['undone']} (ledger id {out['id']})")
    return 0
