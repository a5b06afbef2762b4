"""`triage demo`: the whole loop on a real Triton (observe, fix, re-measure, roll back), from the lab stack."""
from __future__ import annotations

import sys

from .common import emit


def register(sub) -> None:
    dm = sub.add_parser("demo", help="the whole loop on a real Triton: observe, fix, re-measure, roll back")
    dm.add_argument("--incident", choices=("batch-window", "slow-tokenizer", "overload"), default="batch-window")
    dm.add_argument("--auto-remediate", action="store_true",
                    help="headless: apply the top batching fix, re-measure, print JSON (default: open the live TUI)")
    dm.add_argument("--keep", action="store_true", help="keep the change instead of rolling it back")
    dm.add_argument("--load-seconds", type=float, default=20.0, help="length of each measurement")
    dm.add_argument("--format", choices=("md", "json"), default="json", help="headless output (default json)")
    dm.set_defaults(handler=cmd_demo, takes_db=False)


def cmd_demo(args) -> int:

    from triage.lab.demo import run
    from triage.lab.triton_server import available

    why = available()
    if why:
        print(f"triage demo: a real Triton is needed: {why}", file=sys.stderr)
        return 2
    if not args.auto_remediate:
        from triage.sessions.live import LiveSession
        from triage.sessions.offline import load_constraints
        from triage.lab.demo import stack
        from triage.tui.app import TriageApp

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
    emit(result, args.format, _demo_md)
    return 0


def _demo_md(r: dict) -> str:
    from triage.analyzers.markdown import md

    lines = [f"## triage demo — {r['incident']}", ""]
    for f in r["findings"][:3]:
        lines.append(f"- **{f['severity'].upper()} `{f['rule']}`** — {md(f['summary'])}")
    rem = r.get("remediation") or {}
    if rem.get("applied"):
        lines += ["", "**Applied:** " + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in rem["changes"].items() if v[0] != v[1]),
                  "", "```", *rem["arithmetic"], "```", "",
                  "| | p50 ms | p95 ms | p99 ms | req/s | errors |", "|---|---:|---:|---:|---:|---:|"]
        for label in ("before", "after"):
            m = r[label]
            lines.append(f"| {label} | {m['p50_ms']:.1f} | {m['p95_ms']:.1f} | {m['p99_ms']:.1f} | "
                         f"{m['throughput_rps']:.1f} | {m['error_rate']:.2%} |")
        lines += ["", f"**Verdict:** {r['comparison']['verdict']} — {r['comparison']['basis']}"]
        lines.append("Rolled back: config restored." if rem.get("config_restored") else f"Kept in {rem.get('kept_in')}.")
    else:
        lines += ["", f"No change applied: {rem.get('reason')}."]
    return "\n".join(lines) + "\n"
