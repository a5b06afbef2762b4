"""The command line: the top-level parser, and dispatch to the command groups (each registers its own
subcommands and handler: ``offline``, ``model``, ``demo``, ``compare``, ``live``).

Exit codes: 2 for a usage error (bad arguments or input, an unusable --db file; the message says what to
change), 70 (EX_SOFTWARE) for an internal error, a bug: one line naming the exception, the traceback with
``--debug``; 128 + the signal when stopped; otherwise the command's own (``report``: 0 or 1).
Heavy imports (textual, torch, onnxruntime) stay out of this package's import time.
"""
from __future__ import annotations

import argparse
import sys

import triage

from . import compare, demo, live, model, offline
from .common import user_error

EX_USAGE = 2
EX_SOFTWARE = 70  # sysexits.h: an internal software error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triage",
        description="Find what is eating p95 of an ML inference service, from OpenTelemetry traces and "
                    "Prometheus metrics. With no command, opens the TUI on the bundled sample incident.",
        epilog="Examples:\n  triage                          # TUI on the bundled sample incident\n"
               "  triage replay capture/           # TUI on a captured incident (formats detected by content)\n"
               "  triage report capture/ --format json --fail-on warning",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"triage {triage.__version__}")
    p.add_argument("--db", metavar="PATH", help="persist the DuckDB store to PATH (reopened if it exists); "
                                                 "with live, everything received is kept there")
    p.add_argument("--debug", action="store_true", help="on an internal error (exit 70), print the full traceback")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in (offline, model, demo, compare, live):  # this order is the order of --help
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from triage.lifecycle import run

    return run(_main, argv)  # SIGTERM, SIGHUP or the terminal going away stop every command (triage/lifecycle.py)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    import duckdb

    if args.db and not getattr(args, "takes_db", True):
        print(f"triage {args.command}: --db is not used by this command (it is for report, replay, live, "
              f"quantize and rollback)", file=sys.stderr)
        return EX_USAGE
    try:
        return args.handler(args) if args.command else offline.cmd_default(args)
    except duckdb.OutOfMemoryException as exc:
        from triage.collectors.store import out_of_memory

        print(f"triage: {out_of_memory(exc)}", file=sys.stderr)
        return EX_USAGE
    except duckdb.IOException as exc:  # a --db file damaged past what opening it checks
        where = f"{args.db}: damaged or truncated? " if args.db else ""
        print(f"triage: {where}database error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EX_USAGE
    except Exception as exc:
        if user_error(exc):  # bad durations, constraints or --db files, ports in use, unreadable files
            print(f"triage: {exc}", file=sys.stderr)
            return EX_USAGE
        if args.debug:
            import traceback

            traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0][:200]
        hint = "" if args.debug else "; rerun with `triage --debug ...` for the traceback"
        print(f"triage: internal error (a bug{hint}): {type(exc).__name__}{': ' + first if first else ''}",
              file=sys.stderr)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
