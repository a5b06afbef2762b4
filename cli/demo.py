"""`triage demo`: the whole loop on a real Triton or, with ``--stack vllm``, a real vLLM (observe, fix,
re-measure, roll back), from the lab stack."""
from __future__ import annotations

import sys

from .common import emit


TRITON_INCIDENTS = ("batch-window", "slow-tokenizer", "overload")
VLLM_INCIDENTS = ("kv-pressure", "concurrency-cap")


def register(sub) -> None:
    dm = sub.add_parser("demo", help="the whole loop on a real Triton or vLLM: observe, fix, re-measure, roll back")
    dm.add_argument("--stack", choices=("triton", "vllm"), default="triton",
                    help="the serving stack (vllm: the lab's CPU vLLM, `make vllm`)")
    dm.add_argument("--incident", choices=(*TRITON_INCIDENTS, *VLLM_INCIDENTS), default=None,
                    help=f"triton: {', '.join(TRITON_INCIDENTS)} (default batch-window); "
                         f"vllm: {', '.join(VLLM_INCIDENTS)} (default kv-pressure)")
    dm.add_argument("--auto-remediate", action="store_true",
                    help="headless: apply the top fix, re-measure, print JSON (default: open the live TUI; "
                         "Triton only)")
    dm.add_argument("--keep", action="store_true", help="keep the change instead of rolling it back")
    dm.add_argument("--load-seconds", type=float, default=20.0, help="length of each measurement")
    dm.add_argument("--format", choices=("md", "json"), default="json", help="headless output (default json)")
    dm.set_defaults(handler=cmd_demo, takes_db=False)


def cmd_demo(args) -> int:
    if args.stack == "vllm":
        return _cmd_vllm(args)
    args.incident = args.incident or "batch-window"
    if args.incident not in TRITON_INCIDENTS:
        print(f"triage demo: {args.incident!r} is a vLLM incident (add --stack vllm)", file=sys.stderr)
        return 2
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
    lines = _head_md(f"triage demo — {r['incident']}", r["findings"])
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


def _cmd_vllm(args) -> int:
    from triage.lab.vllm_server import available

    incident = args.incident or "kv-pressure"
    if incident not in VLLM_INCIDENTS:
        print(f"triage demo: --stack vllm has the incidents {', '.join(VLLM_INCIDENTS)}", file=sys.stderr)
        return 2
    why = available()
    if why:
        print(f"triage demo: a real vLLM is needed: {why}", file=sys.stderr)
        return 2
    if not args.auto_remediate:
        print("triage demo: the vLLM demo runs headless: add --auto-remediate", file=sys.stderr)
        return 2
    from triage.lab.vllm_demo import run

    result = run(incident, keep=args.keep, progress=lambda m: print(f"triage demo: {m}", file=sys.stderr))
    emit(result, args.format, _vllm_md)
    return 0


def _vllm_md(r: dict) -> str:
    lines = _head_md(f"triage demo — vLLM, {r['incident']}", r["findings"])
    rem = r.get("remediation") or {}
    if not rem.get("applied"):
        return "\n".join(lines + ["", f"No change applied: {rem.get('reason')}."]) + "\n"
    lines += ["", "**Applied:** " + ", ".join(f"`{k}` {v[0]} → {v[1]}" for k, v in rem["changes"].items()),
              "", "```", *rem["arithmetic"], "```", "", "```diff", rem["diff"].rstrip("\n"), "```", "",
              "| | TTFT p95 ms | ITL p95 ms | e2e p95 ms | tokens/s | errors |", "|---|---:|---:|---:|---:|---:|"]
    for label in ("before", "after"):
        m = r[label]
        lines.append(f"| {label} | {m['ttft_p95_ms']:.1f} | {m['itl_p95_ms']:.1f} | {m['p95_ms']:.1f} | "
                     f"{m['throughput_tok_s']:.1f} | {m['error_rate']:.2%} |")
    c = r["comparison"]
    lines += [""] + [f"- {k}: {c[k]['verdict']} — {c[k]['basis']}" for k in ("ttft", "itl", "e2e")]
    lines += ["", f"**Verdict:** {c['verdict']} — {c['basis']}"]
    lines.append("Rolled back: arguments restored byte for byte." if rem.get("args_restored")
                 else f"Kept in {rem.get('kept_in')}." if rem.get("kept_in") else "Rolled back: NOT restored.")
    return "\n".join(lines) + "\n"


def _head_md(title: str, findings: list[dict]) -> list[str]:
    """A demo's Markdown heading and its first three findings."""
    from triage.analyzers.markdown import md

    return [f"## {title}", "", *(f"- **{f['severity'].upper()} `{f['rule']}`** — {md(f['summary'])}"
                                 for f in findings[:3])]
