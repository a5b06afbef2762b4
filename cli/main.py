"""The command line: ``triage`` (TUI on the bundled sample), ``triage replay``, ``triage report``.

Exit codes of ``report``: 0 nothing at/above --fail-on, 1 something is or a rule failed (severity ``error``),
2 usage, unreadable input or an unusable --db file.
Heavy imports (textual, torch, onnxruntime) stay out of this module's import time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from triage.analyzers.constraints import ConstraintsError

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
    p.add_argument("--db", metavar="PATH", help="persist the DuckDB store to PATH (reopened if it exists); "
                                                 "with live, everything received is kept there")
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
    rep.add_argument("--fail-on", choices=("warning", "critical"),
                     help="exit 1 when a finding is at/above this (a rule that failed always exits 1)")
    rep.add_argument("--strict", action="store_true",
                     help="exit 2 when any input problem was found (damaged records, skew, duplicates, ...)")
    sub.add_parser("samples", help="list the bundled sample incidents")
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
    rb = sub.add_parser("rollback", help="undo a change recorded in the ledger")
    rb.add_argument("ledger_id", metavar="LEDGER_ID")
    rb.add_argument("--ledger", metavar="FILE", help="ledger file (default: the global ledger)")
    dm = sub.add_parser("demo", help="the whole loop on a real Triton: observe, fix, re-measure, roll back")
    dm.add_argument("--incident", choices=("batch-window", "slow-tokenizer", "overload"), default="batch-window")
    dm.add_argument("--auto-remediate", action="store_true",
                    help="headless: apply the top batching fix, re-measure, print JSON (default: open the live TUI)")
    dm.add_argument("--keep", action="store_true", help="keep the change instead of rolling it back")
    dm.add_argument("--load-seconds", type=float, default=20.0, help="length of each measurement")
    dm.add_argument("--format", choices=("md", "json"), default="json", help="headless output (default json)")
    cmp_ = sub.add_parser("compare", help="before/after: p50/p95/p99 per route and stage with confidence intervals, "
                                                     "findings that appeared or went away, mix vs speed")
    cmp_.add_argument("before", metavar="BEFORE", help="capture (file or folder) before the change")
    cmp_.add_argument("after", metavar="AFTER", help="capture (file or folder) after the change")
    cmp_.add_argument("--format", choices=("md", "json"), default="md")
    cmp_.add_argument("--constraints", metavar="FILE", help="triage.toml (SLO used for the verdict)")
    cmp_.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any route regressed")

    def live_args(sp):
        sp.add_argument("--otlp-listen", metavar="HOST:PORT", default="127.0.0.1:4318",
                        help="OTLP/HTTP receiver address: HOST:PORT, [IPv6]:PORT, HOST, :PORT (default "
                             "127.0.0.1:4318; 'off' to disable). A non-loopback address needs --otlp-tls-cert/-key "
                             "and a bearer token (TRIAGE_OTLP_BEARER_TOKEN[_FILE]), or --otlp-insecure")
        sp.add_argument("--otlp-tls-cert", metavar="PEM", help="serve OTLP over HTTPS with this certificate (chain)")
        sp.add_argument("--otlp-tls-key", metavar="PEM", help="the certificate's private key (if not in the cert file)")
        sp.add_argument("--otlp-insecure", action="store_true",
                        help="accept spans on a non-loopback address without TLS or a token (prints a warning)")
        sp.add_argument("--prometheus", metavar="URL", type=_prometheus_url,
                        help="Prometheus-compatible API (credentials: TRIAGE_PROMETHEUS_* environment variables; "
                             "a URL with user:password@ is refused)")
        sp.add_argument("--window", metavar="DURATION", default="15m", help="rolling analysis window (default 15m)")
        sp.add_argument("--constraints", metavar="FILE", help="triage.toml")
        sp.add_argument("--settle", metavar="DURATION", default="10s",
                        help="a trace is taken once no span of it has arrived for this long (default 10s: services "
                             "export in batches, and a request taken before its downstream spans arrive looks fast)")

    lv = sub.add_parser("live", help="watch a live service: OTLP receiver + Prometheus queries")
    live_args(lv)
    lv.add_argument("--refresh", metavar="DURATION", default="5s", help="analysis refresh interval (default 5s)")
    lv.add_argument("--for", dest="duration", metavar="DURATION",
                    help="headless: collect for DURATION, wait --settle for the traces begun in it to complete, "
                         "print the report, exit with report's codes (2 when nothing was received)")
    lv.add_argument("--format", choices=("md", "json"), default="md")
    lv.add_argument("--fail-on", choices=("warning", "critical"))
    cap = sub.add_parser("capture", help="record a replayable capture folder from live sources")
    live_args(cap)
    cap.add_argument("--out", required=True, metavar="DIR", help="capture folder to write (must not exist or be empty)")
    cap.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                     help="how long to record; then --settle more for the late spans of the traces begun in it")
    return p


def parse_duration(text: str) -> float:
    """'30s', '15m', '2h', '500ms' or plain seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text or "")
    if not m:
        raise ValueError(f"invalid duration {text!r} (e.g. 30s, 15m, 2h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _prometheus_url(text: str) -> str:
    """--prometheus: checked before anything starts; the message never repeats a password (argparse would)."""
    from triage.collectors.prometheus import check_url

    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen(text: str):
    from triage.collectors.receiver import parse_listen

    return parse_listen(text)


def emit(result: dict, fmt: str, markdown) -> None:
    """Print a command's result: the JSON object, or its Markdown rendering."""
    import orjson

    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(markdown(result))


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

    from triage.analyzers.report import exit_code, failed_rules, to_markdown
    from triage.sessions.offline import analyze

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
    emit(rep, args.format, to_markdown)
    for f in failed_rules(rep):
        print(f"triage report: rule {f['rule']} failed, its question is unanswered: {f['summary']}", file=sys.stderr)
    problems = rep["inputs"]["problems"]["count"]
    if args.strict and problems:
        print(f"triage report: --strict: {problems} input problem(s), see inputs.problems", file=sys.stderr)
        return 2
    return exit_code(rep, args.fail_on)


def cmd_compare(args) -> int:

    from triage.analyzers.compare import compare_analyses, to_markdown
    from triage.sessions.offline import analyze, load_constraints

    for p in (args.before, args.after):
        if not Path(p).exists():
            print(f"triage compare: no such file or directory: {p}", file=sys.stderr)
            return 2
    cons = load_constraints([args.after], args.constraints)
    before = analyze([args.before], constraints=cons)
    after = analyze([args.after], constraints=cons)
    for label, a in (("BEFORE", before), ("AFTER", after)):
        if not a.store.scalar("SELECT count(*) FROM requests"):
            print(f"triage compare: no requests in {label}", file=sys.stderr)
            return 2
    result = compare_analyses(before, after, cons)
    emit(result, args.format, to_markdown)
    regressed = any(e["verdict"] == "regressed" for e in result["routes"].values())
    return 1 if args.fail_on_regression and regressed else 0


def cmd_tui(paths: list[str], db: str | None, constraints: str | None, title: str, model_repo: str | None = None) -> int:
    from triage.tui.app import TriageApp

    if db:  # a --db that cannot be opened is said here, before the screen takes the terminal
        from triage.collectors.store import Store

        Store(db).close()
    TriageApp(paths=paths, db=db, constraints_file=constraints, source_title=title, model_repo=model_repo).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    from triage.lifecycle import run

    return run(_main, argv)  # SIGTERM, SIGHUP or the terminal going away stop every command (tui/lifecycle.py)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    import duckdb

    from triage import sample_traces

    try:
        from .live import cmd_capture, cmd_demo, cmd_live
        from .model import cmd_quantize, cmd_rollback

        commands = {"report": cmd_report, "quantize": cmd_quantize, "rollback": cmd_rollback,
                    "compare": cmd_compare, "live": cmd_live, "capture": cmd_capture, "demo": cmd_demo}
        if args.db and args.command in ("compare", "capture", "demo", "samples"):
            print(f"triage {args.command}: --db is not used by this command (it is for report, replay, live, "
                  f"quantize and rollback)", file=sys.stderr)
            return 2
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
    except duckdb.OutOfMemoryException as exc:
        from triage.collectors.store import out_of_memory

        print(f"triage: {out_of_memory(exc)}", file=sys.stderr)
        return 2
    except duckdb.IOException as exc:  # a --db file damaged past what opening it checks
        where = f"{args.db}: damaged or truncated? " if args.db else ""
        print(f"triage: {where}database error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
