"""The command line: ``triage`` (TUI on the bundled sample), ``triage replay``, ``triage report``.

Exit codes of ``report``: 0 nothing at/above --fail-on, 1 something is, 2 usage or unreadable input.
Heavy imports (textual, torch, onnxruntime) stay out of this module's import time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analyzers.constraints import ConstraintsError

VERSION = "0.1.0"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triage",
        description="Find what is eating p95 of an ML inference service, from OpenTelemetry traces and "
                    "Prometheus metrics. With no command, opens the TUI on the bundled sample incident.",
        epilog="Examples:\n  triage                          # TUI on the bundled sample incident\n"
               "  triage replay capture/           # TUI on a captured incident (formats detected by content)\n"
               "  triage report capture/ --format json --fail-on warning",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"triage {VERSION}")
    p.add_argument("--db", metavar="PATH", help="persist the DuckDB store to PATH (reopened if it exists)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp):
        sp.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (walked recursively)")
        sp.add_argument("--constraints", metavar="FILE", help="triage.toml (default: one next to the capture)")
        sp.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                        help="persist the DuckDB store to PATH (reopened if it exists)")

    r = sub.add_parser("replay", help="open the TUI on captured files/folders")
    common(r)
    r.add_argument("--sample", metavar="NAME", help="open a bundled sample incident by name")
    r.add_argument("--model-repo", metavar="DIR", help="Triton model repository the one-key model fix acts on")
    rep = sub.add_parser("report", help="print a report (headless)")
    common(rep)
    rep.add_argument("--format", choices=("md", "json"), default="md")
    rep.add_argument("--fail-on", choices=("warning", "critical"), help="exit 1 when a finding is at/above this")
    rep.add_argument("--strict", action="store_true",
                     help="exit 2 when any input problem was found (damaged records, skew, duplicates, ...)")
    sub.add_parser("samples", help="list the bundled sample incidents")
    qz = sub.add_parser("quantize", help="quantize (or re-export) a model, verify it, install it as a new version")
    qz.add_argument("model", metavar="MODEL",
                    help="ONNX file, Triton model directory (or name with --repo), TorchScript file, or module:function")
    qz.add_argument("--mode", choices=("dynamic", "static", "fp16"), default="dynamic")
    qz.add_argument("--calib", metavar="FILE", help=".npz of real inputs for calibration and agreement")
    qz.add_argument("--capture", metavar="PATH", help="draw verification shapes from this capture's input-size mix")
    qz.add_argument("--repo", metavar="DIR", help="Triton model repository (MODEL is then a model name)")
    qz.add_argument("--constraints", metavar="FILE", help="triage.toml ([guardrails])")
    qz.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the measurements")
    qz.add_argument("--dry-run", action="store_true", help="build and verify, but do not install")
    qz.add_argument("--format", choices=("md", "json"), default="md")
    rb = sub.add_parser("rollback", help="undo a change recorded in the ledger")
    rb.add_argument("ledger_id", metavar="LEDGER_ID")
    rb.add_argument("--ledger", metavar="FILE", help="ledger file (default: the global ledger)")
    dm = sub.add_parser("demo", help="the whole loop on a real Triton: observe, fix, re-measure, roll back")
    dm.add_argument("--incident", choices=("batch-window", "slow-tokenizer", "overload"), default="batch-window")
    dm.add_argument("--auto-remediate", action="store_true",
                    help="headless: apply the top batching fix, re-measure, print JSON (default: open the live TUI)")
    dm.add_argument("--keep", action="store_true", help="keep the change instead of rolling it back")
    dm.add_argument("--load-seconds", type=float, default=20.0, help="length of each measurement")
    dm.add_argument("--format", choices=("md", "json"), default="json")
    cmp_ = sub.add_parser("compare", help="before/after: p50/p95/p99 per route with confidence intervals")
    cmp_.add_argument("before", metavar="BEFORE", help="capture (file or folder) before the change")
    cmp_.add_argument("after", metavar="AFTER", help="capture (file or folder) after the change")
    cmp_.add_argument("--format", choices=("md", "json"), default="md")
    cmp_.add_argument("--constraints", metavar="FILE", help="triage.toml (SLO used for the verdict)")
    cmp_.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any route regressed")

    def live_args(sp):
        sp.add_argument("--otlp-listen", metavar="HOST:PORT", default="127.0.0.1:4318",
                        help="OTLP/HTTP receiver address (default 127.0.0.1:4318; 'off' to disable)")
        sp.add_argument("--prometheus", metavar="URL",
                        help="Prometheus-compatible API (credentials: TRIAGE_PROMETHEUS_* environment variables)")
        sp.add_argument("--window", metavar="DURATION", default="15m", help="rolling analysis window (default 15m)")
        sp.add_argument("--constraints", metavar="FILE", help="triage.toml")

    lv = sub.add_parser("live", help="watch a live service: OTLP receiver + Prometheus queries")
    live_args(lv)
    lv.add_argument("--refresh", metavar="DURATION", default="5s", help="analysis refresh interval (default 5s)")
    lv.add_argument("--for", dest="duration", metavar="DURATION",
                    help="headless: collect for DURATION, print the report, exit with report's codes")
    lv.add_argument("--format", choices=("md", "json"), default="md")
    lv.add_argument("--fail-on", choices=("warning", "critical"))
    cap = sub.add_parser("capture", help="record a replayable capture folder from live sources")
    live_args(cap)
    cap.add_argument("--out", required=True, metavar="DIR", help="capture folder to write (must not exist or be empty)")
    cap.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="how long to record")
    return p


def parse_duration(text: str) -> float:
    """'30s', '15m', '2h', '500ms' or plain seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text or "")
    if not m:
        raise ValueError(f"invalid duration {text!r} (e.g. 30s, 15m, 2h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _listen(text: str):
    if text in ("off", "none", ""):
        return None
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


def _progress_to_stderr():
    if not sys.stderr.isatty():
        return None

    def progress(done: int, total: int, path: str) -> None:
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(f"\r\x1b[2Kingesting {pct:5.1f}%  {Path(path).name if path else 'done'}")
        if done >= total:
            sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()
    return progress


def _check_paths(paths: list[str], db: str | None) -> str | None:
    if not paths and not db:
        return "no input: give one or more files or folders (or --db PATH of an existing store)"
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        return f"no such file or directory: {', '.join(missing)}"
    return None


def cmd_report(args) -> int:
    import orjson

    from analyzers.report import exit_code, to_markdown
    from analyzers.session import analyze

    err = _check_paths(args.paths, args.db)
    if err:
        print(f"triage report: {err}", file=sys.stderr)
        return 2
    a = analyze(args.paths, db=args.db, constraints_file=args.constraints, progress=_progress_to_stderr())
    rep = a.report()
    if args.paths and a.ingest.files == 0 and not rep["inputs"]["spans"] and not rep["inputs"]["samples"]:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in rep["inputs"]["skipped"][:5])
        print(f"triage report: no readable telemetry in the inputs ({reasons})", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(to_markdown(rep))
    problems = rep["inputs"]["problems"]["count"]
    if args.strict and problems:
        print(f"triage report: --strict: {problems} input problem(s), see inputs.problems", file=sys.stderr)
        return 2
    return exit_code(rep, args.fail_on)


def _live_session(args):
    from analyzers.live import LiveSession
    from analyzers.session import load_constraints

    cons = load_constraints([], args.constraints)
    return LiveSession(constraints=cons, listen=_listen(args.otlp_listen), prometheus_url=args.prometheus,
                       window_s=parse_duration(args.window)).start()


def cmd_live(args) -> int:
    import time

    import orjson

    from analyzers.report import exit_code, to_markdown

    if not args.duration:
        from tui.app import TriageApp

        TriageApp(paths=[], live=_live_session(args), refresh_s=parse_duration(args.refresh),
                  source_title=f"live · {args.otlp_listen} · {args.prometheus or 'no prometheus'}").run()
        return 0
    session = _live_session(args)
    try:
        print(f"triage live: receiving OTLP on {session.otlp_endpoint or 'off'}, "
              f"prometheus {args.prometheus or 'off'}, for {args.duration}", file=sys.stderr)
        end = time.monotonic() + parse_duration(args.duration)
        refresh = parse_duration(args.refresh)
        while time.monotonic() < end:
            time.sleep(max(0.0, min(refresh, end - time.monotonic())))
            if time.monotonic() < end:
                session.refresh()
        snap = session.refresh()
    finally:
        session.stop()
    if snap.status["prometheus"].startswith("stale"):
        print(f"triage live: prometheus {snap.status['prometheus']}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(snap.report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(to_markdown(snap.report))
    return exit_code(snap.report, args.fail_on)


def cmd_capture(args) -> int:
    import shutil
    import time

    from collectors.export import write_metrics, write_traces

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"triage capture: {out} exists and is not empty; refusing to overwrite", file=sys.stderr)
        return 2
    session = _live_session(args)
    try:
        print(f"triage capture: receiving OTLP on {session.otlp_endpoint or 'off'} for {args.duration}",
              file=sys.stderr)
        time.sleep(parse_duration(args.duration))
        session.window_s = max(session.window_s, parse_duration(args.duration) + 60)
        snap = session.refresh()
    finally:
        session.stop()
    out.mkdir(parents=True, exist_ok=True)
    n_spans = write_traces(session.store, out / "traces.otlp.jsonl")
    n_samples = write_metrics(session.store, out / "metrics.prom")
    if session.constraints.path:
        shutil.copyfile(session.constraints.path, out / "triage.toml")
    print(f"triage capture: wrote {n_spans} spans and {n_samples} samples to {out} "
          f"(prometheus: {snap.status['prometheus']})", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    import orjson

    from analyzers.compare import compare, durations_ms, to_markdown
    from analyzers.session import analyze, load_constraints

    for p in (args.before, args.after):
        if not Path(p).exists():
            print(f"triage compare: no such file or directory: {p}", file=sys.stderr)
            return 2
    cons = load_constraints([args.after], args.constraints)
    before = durations_ms(analyze([args.before], constraints=cons).store)
    after = durations_ms(analyze([args.after], constraints=cons).store)
    if not before or not after:
        print("triage compare: no requests in " + ("BEFORE" if not before else "AFTER"), file=sys.stderr)
        return 2
    result = compare(before, after, cons)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(to_markdown(result))
    regressed = any(e["verdict"] == "regressed" for e in result["routes"].values())
    return 1 if args.fail_on_regression and regressed else 0


def _ledger_store(args):
    """With --db, the ledger also goes into that store's remediations table."""
    if not args.db:
        return None
    from collectors.store import Store

    return Store(args.db)


def cmd_quantize(args) -> int:
    import orjson

    from remediations.quantize import RemediationError, plan, run, shapes_from_capture

    from analyzers.session import load_constraints

    cons = load_constraints([], args.constraints)
    shapes = None
    if args.capture:
        from analyzers.session import analyze

        shapes = shapes_from_capture(analyze([args.capture]).store) or None
    try:
        p = plan(args.model, args.mode, repo=args.repo, calib=args.calib, guardrails=cons.guardrails,
                 threads=args.threads, shapes=shapes)
        result = run(p, apply=not args.dry_run, store=_ledger_store(args),
                     progress=lambda m: print(f"triage quantize: {m}", file=sys.stderr))
    except RemediationError as exc:
        print(f"triage quantize: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(_quantize_md(result))
    if result["applied"] or args.dry_run and result.get("reason") == "preview only":
        return 0
    return 1


def _quantize_md(r: dict) -> str:
    p, v = r["plan"], r["verification"]
    lines = [f"## triage quantize — {p['mode']}", "", f"**Change:** {p['what_changes']}", "",
             f"**Expected:** {p['expected_effect']} (risk {p['risk']}/5)", ""]
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
    from remediations.quantize import RemediationError, rollback

    try:
        out = rollback(args.ledger_id, Path(args.ledger) if args.ledger else None, store=_ledger_store(args))
    except RemediationError as exc:
        print(f"triage rollback: {exc}", file=sys.stderr)
        return 2
    print(f"rolled back {args.ledger_id}: removed {out['removed']} (ledger id {out['id']})")
    return 0


def cmd_demo(args) -> int:
    import orjson

    from remediations.demo import run
    from remediations.triton_server import available

    why = available()
    if why:
        print(f"triage demo: a real Triton is needed: {why}", file=sys.stderr)
        return 2
    from remediations.procs import exit_on_signals

    exit_on_signals()  # a terminal closing (SIGHUP) or kill (SIGTERM) still stops every server we started
    if not args.auto_remediate:
        from analyzers.live import LiveSession
        from analyzers.session import load_constraints
        from remediations.demo import stack
        from tui.app import TriageApp

        session = LiveSession(load_constraints([], None), listen=("127.0.0.1", 0), window_s=300).start()
        try:
            with stack(args.incident, session, progress=lambda m: print(f"triage demo: {m}", file=sys.stderr)) as s:
                TriageApp(paths=[], live=session, refresh_s=2.0, model_repo=str(s["model_dir"].parent),
                          source_title=f"demo: {args.incident} · live").run()
        finally:
            session.stop()
        return 0
    result = run(args.incident, keep=args.keep, load_s=args.load_seconds,
                 progress=lambda m: print(f"triage demo: {m}", file=sys.stderr))
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_tui(paths: list[str], db: str | None, constraints: str | None, title: str, model_repo: str | None = None) -> int:
    from tui.app import TriageApp

    TriageApp(paths=paths, db=db, constraints_file=constraints, source_title=title, model_repo=model_repo).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import sample_traces

    try:
        commands = {"report": cmd_report, "quantize": cmd_quantize, "rollback": cmd_rollback,
                    "compare": cmd_compare, "live": cmd_live, "capture": cmd_capture, "demo": cmd_demo}
        if args.command in commands:
            return commands[args.command](args)
        if args.command == "samples":
            for name in sample_traces.names():
                print(name)
            return 0
        if args.command == "replay":
            if args.sample:
                if args.sample not in sample_traces.names():
                    print(f"triage replay: unknown sample {args.sample!r} (have: {', '.join(sample_traces.names())})",
                          file=sys.stderr)
                    return 2
                args.paths = [str(sample_traces.path(args.sample))]
            err = _check_paths(args.paths, args.db)
            if err:
                print(f"triage replay: {err}", file=sys.stderr)
                return 2
            return cmd_tui(args.paths, args.db, args.constraints, ", ".join(args.paths) or args.db, args.model_repo)
        default = sample_traces.path()
        return cmd_tui([str(default)], args.db, None, f"sample: {default.name}")
    except ConstraintsError as exc:
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # bad durations, ports in use, unreadable files
        print(f"triage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
