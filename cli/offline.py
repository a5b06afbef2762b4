"""`triage` (the TUI on the bundled sample), `triage replay`, `triage report` and `triage samples`: commands on
captured files.

Exit codes of ``report``: 0 nothing at/above --fail-on, 1 something is or a rule failed (severity ``error``),
2 usage, unreadable input or an unusable --db file.
"""
from __future__ import annotations

import argparse
import sys

from .common import backend_window, check_paths, emit, progress_to_stderr, resolve_sources


def _inputs(sp) -> None:
    sp.add_argument("paths", nargs="*", metavar="PATH",
                    help="files or folders (walked recursively), or trace backends: clickhouse://[user@]host:port/db"
                         "[?table=otel_traces], tempo://host:port, jaeger://host:port")
    sp.add_argument("--constraints", metavar="FILE", help="triage.toml (default: one next to the capture)")
    sp.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                    help="persist the DuckDB store to PATH (reopened if it exists)")
    backend_window(sp)


def register(sub) -> None:
    r = sub.add_parser("replay", help="open the TUI on captured files/folders")
    _inputs(r)
    r.add_argument("--sample", metavar="NAME", help="open a bundled sample incident by name")
    r.add_argument("--model-repo", metavar="DIR", help="Triton model repository the one-key model fix acts on")
    r.set_defaults(handler=cmd_replay)
    rep = sub.add_parser("report", help="print a report (headless)")
    _inputs(rep)
    rep.add_argument("--format", choices=("md", "json"), default="md")
    rep.add_argument("--fail-on", choices=("warning", "critical"),
                     help="exit 1 when a finding is at/above this (a rule that failed always exits 1)")
    rep.add_argument("--strict", action="store_true",
                     help="exit 2 when any input problem was found (damaged records, skew, duplicates, ...)")
    rep.set_defaults(handler=cmd_report)
    sub.add_parser("samples", help="list the bundled sample incidents").set_defaults(handler=cmd_samples,
                                                                                     takes_db=False)


def cmd_report(args) -> int:

    from triage.analyzers.report import exit_code, failed_rules, to_markdown
    from triage.sessions.offline import analyze

    args.paths = resolve_sources(args)
    err = check_paths(args.paths, args.db)
    if err:
        print(f"triage report: {err}", file=sys.stderr)
        return 2
    a = analyze(args.paths, db=args.db, constraints_file=args.constraints, progress=progress_to_stderr())
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


def cmd_samples(args) -> int:
    from triage import sample_traces

    for name in sample_traces.names():
        print(name)
    return 0


def cmd_replay(args) -> int:
    from triage import sample_traces

    if args.sample:
        if args.sample not in sample_traces.names():
            print(f"triage replay: unknown sample {args.sample!r} (have: {', '.join(sample_traces.names())})",
                  file=sys.stderr)
            return 2
        args.paths = [str(sample_traces.path(args.sample))]
    args.paths = resolve_sources(args)
    err = check_paths(args.paths, args.db)
    if err:
        print(f"triage replay: {err}", file=sys.stderr)
        return 2
    return _tui(args.paths, args.db, args.constraints, ", ".join(args.paths) or args.db, args.model_repo)


def cmd_default(args) -> int:
    """No command: the TUI on the bundled sample incident."""
    from triage import sample_traces

    default = sample_traces.path()
    return _tui([str(default)], args.db, None, f"sample: {default.name}")


def _tui(paths: list[str], db: str | None, constraints: str | None, title: str, model_repo: str | None = None) -> int:
    from triage.tui.app import TriageApp

    if db:  # a --db that cannot be opened is said here, before the screen takes the terminal
        from triage.collectors.store import Store

        Store(db).close()
    TriageApp(paths=paths, db=db, constraints_file=constraints, source_title=title, model_repo=model_repo).run()
    return 0
