"""`triage quantize`, `triage engine-args` and `triage rollback`: model and engine remediations from the
command line."""
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
    ea = sub.add_parser("engine-args", help="propose (and with --apply make) the vLLM engine-arguments change "
                                            "for a capture's top LLM finding")
    ea.add_argument("paths", nargs="+", metavar="PATH", help="the capture: traces with vLLM's spans, its /metrics")
    ea.add_argument("--constraints", metavar="FILE", help="triage.toml with [vllm] (default: one next to the capture)")
    ea.add_argument("--apply", action="store_true", help="write the arguments file, restart ([vllm] restart), wait "
                    "for [vllm] health_url; a start that does not get healthy is rolled back")
    ea.add_argument("--format", choices=("md", "json"), default="md")
    ea.set_defaults(handler=cmd_engine_args, takes_db=False)
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


def cmd_engine_args(args) -> int:
    from triage.remediations import engine_args as ea
    from triage.sessions.offline import analyze

    from .common import check_paths

    err = check_paths(args.paths, None)
    if err:
        print(f"triage engine-args: {err}", file=sys.stderr)
        return 2
    a = analyze(args.paths, constraints_file=args.constraints)
    cfg = a.constraints.vllm
    if not cfg.get("args_file"):
        print("triage engine-args: triage.toml needs [vllm] args_file (the engine arguments file the serving unit "
              "reads)", file=sys.stderr)
        return 2
    args_file = Path(a.constraints.path).parent / cfg["args_file"]  # relative to the triage.toml naming it
    top = next((f for f in a.findings if f.severity in ("critical", "warning") and f.rule in ea.RULES), None)
    if top is None:
        emit({"finding": None, "proposal": None}, args.format,
             lambda r: "No LLM engine finding at warning or above: nothing to change.\n")
        return 0
    try:
        proposal = ea.propose(args_file, top.rule, ea.measure(a.store), top.evidence)
    except (OSError, ValueError) as exc:
        print(f"triage engine-args: {exc}", file=sys.stderr)
        return 2
    out = {"finding": {"rule": top.rule, "severity": top.severity, "summary": top.summary},
           "proposal": proposal.to_dict(), "applied": None}
    if args.apply and proposal.changes:
        if not (cfg.get("restart") and cfg.get("health_url")):
            print("triage engine-args: --apply needs [vllm] restart (an argv list) and health_url", file=sys.stderr)
            return 2
        try:
            entry = ea.apply(proposal, ea.Unit.from_config(cfg))
        except ea.StartFailed as exc:
            print(f"triage engine-args: {exc}", file=sys.stderr)
            return 1
        out["applied"] = {"ledger_id": entry["id"], "restart_s": entry["restart_s"]}
    emit(out, args.format, _engine_md)
    return 0


def _engine_md(r: dict) -> str:
    from triage.analyzers.markdown import md

    f, p = r["finding"], r["proposal"]
    lines = [f"## triage engine-args — `{f['rule']}`", "", md(f["summary"]), "", "```", *p["arithmetic"], "```"]
    if not p["changes"]:
        return "\n".join(lines + ["", "No argument to change."]) + "\n"
    lines += ["", "```diff", p["diff"].rstrip("\n"), "```"]
    ap = r["applied"]
    lines.append(f"\nApplied and restarted in {ap['restart_s']} s (undo: `triage rollback {ap['ledger_id']}`)."
                 if ap else "\nNot applied (add --apply).")
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
