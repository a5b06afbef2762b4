"""`triage compare`: two captures, before and after a change. In a terminal, with no --format and no
--fail-on-regression, it opens the TUI's compare screen on them; otherwise it prints markdown or JSON."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import emit


def register(sub) -> None:
    cmp_ = sub.add_parser("compare", help="before/after: p50/p95/p99 per route and stage with confidence intervals, "
                                          "findings that appeared or went away, mix vs speed")
    cmp_.add_argument("before", metavar="BEFORE", help="capture (file or folder) before the change")
    cmp_.add_argument("after", metavar="AFTER", help="capture (file or folder) after the change")
    cmp_.add_argument("--format", choices=("md", "json"),
                      help="print markdown (the default when stdout is not a terminal) or JSON instead of the TUI")
    cmp_.add_argument("--constraints", metavar="FILE", help="triage.toml (SLO used for the verdict)")
    cmp_.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any route regressed")
    cmp_.set_defaults(handler=cmd_compare, takes_db=False)


def cmd_compare(args) -> int:

    from triage.analyzers.compare import compare_analyses, to_markdown
    from triage.sessions.offline import analyze, load_constraints

    for p in (args.before, args.after):
        if not Path(p).exists():
            print(f"triage compare: no such file or directory: {p}", file=sys.stderr)
            return 2
    if args.format is None and not args.fail_on_regression and sys.stdout.isatty() and sys.stdin.isatty():
        from triage.tui.app import TriageApp

        TriageApp(paths=[args.after], constraints_file=args.constraints, compare_before=args.before,
                  source_title=f"{args.after} (compared with {args.before})").run()
        return 0
    cons = load_constraints([args.after], args.constraints)
    before = analyze([args.before], constraints=cons)
    after = analyze([args.after], constraints=cons)
    for label, a in (("BEFORE", before), ("AFTER", after)):
        if not a.store.scalar("SELECT count(*) FROM requests"):
            print(f"triage compare: no requests in {label}", file=sys.stderr)
            return 2
    result = compare_analyses(before, after, cons)
    emit(result, args.format or "md", to_markdown)
    regressed = any(e["verdict"] == "regressed" for e in result["routes"].values())
    return 1 if args.fail_on_regression and regressed else 0
