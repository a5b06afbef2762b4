"""`triage live`, `triage capture` and `triage demo`: commands that start servers and watch them."""
from __future__ import annotations

import sys
from pathlib import Path

from .main import _listen, emit, parse_duration


def _shown(url: str | None) -> str | None:
    from triage.collectors.prometheus import redact_url

    return url and redact_url(url)


def _live_session(args, window_s: float | None = None, db: str | None = None):
    from triage.sessions.live import LiveSession
    from triage.sessions.offline import load_constraints
    from triage.collectors.receiver import token_from_env

    cons = load_constraints([], args.constraints)
    listen = _listen(args.otlp_listen)
    options = {"tls_cert": args.otlp_tls_cert, "tls_key": args.otlp_tls_key, "insecure": args.otlp_insecure,
               "token": token_from_env() if listen else None}
    session = LiveSession(constraints=cons, listen=listen, prometheus_url=args.prometheus,
                          window_s=window_s or parse_duration(args.window), settle_s=parse_duration(args.settle),
                          receiver_options=options, db=db).start()
    if session.receiver_warning:
        print(f"triage: WARNING: {session.receiver_warning}", file=sys.stderr)
    return session


def _finish(session, cmd: str):
    """The last snapshot of a bounded run (``LiveSession.finish``), saying why it waits."""
    if session.settle_s:
        print(f"triage {cmd}: waiting {session.settle_s:g}s for the last traces to complete (--settle)",
              file=sys.stderr)
    return session.finish()


def cmd_live(args) -> int:
    import time

    from triage.analyzers.report import exit_code, to_markdown
    from triage.tui.app import TriageApp

    session = _live_session(args, db=args.db)
    if args.db:
        print(f"triage live: keeping everything received in {args.db} (--db)", file=sys.stderr)
    if not args.duration:
        try:
            TriageApp(paths=[], live=session, refresh_s=parse_duration(args.refresh),
                      source_title=f"live · {args.otlp_listen} · {_shown(args.prometheus) or 'no prometheus'}").run()
        finally:
            session.stop()
        return 0
    try:
        print(f"triage live: receiving OTLP on {session.otlp_endpoint or 'off'}, "
              f"prometheus {_shown(args.prometheus) or 'off'}, for {args.duration}", file=sys.stderr)
        end = time.monotonic() + parse_duration(args.duration)
        refresh = parse_duration(args.refresh)
        while time.monotonic() < end:
            time.sleep(max(0.0, min(refresh, end - time.monotonic())))
            if time.monotonic() < end:
                session.refresh()
        snap = _finish(session, "live")
    finally:
        session.stop()
    settling = snap.status["settling"]
    if settling and settling["spans"]:
        print(f"triage live: {settling['spans']} spans of {settling['traces']} traces begun after {args.duration} "
              f"are not in this report", file=sys.stderr)
    if snap.status["prometheus"].startswith("stale"):
        print(f"triage live: prometheus {snap.status['prometheus']}", file=sys.stderr)
    emit(snap.report, args.format, to_markdown)
    if not snap.report["inputs"]["spans"] and not snap.report["inputs"]["samples"]:
        print(f"triage live: nothing received in {args.duration}: no spans, no metric samples", file=sys.stderr)
        return 2
    return exit_code(snap.report, args.fail_on)


def cmd_capture(args) -> int:
    import shutil
    import time

    from triage.collectors.export import write_metrics, write_traces

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"triage capture: {out} exists and is not empty; refusing to overwrite", file=sys.stderr)
        return 2
    duration_s = parse_duration(args.duration)
    # the window holds everything recorded, and the settle period after it
    session = _live_session(args, max(parse_duration(args.window), 2 * (duration_s + parse_duration(args.settle)) + 60))
    try:
        print(f"triage capture: receiving OTLP on {session.otlp_endpoint or 'off'} for {args.duration}",
              file=sys.stderr)
        time.sleep(duration_s)
        snap = _finish(session, "capture")  # the traces begun in the duration, each with its late spans
        out.mkdir(parents=True, exist_ok=True)
        n_spans = write_traces(session.store, out / "traces.otlp.jsonl")
        n_samples = write_metrics(session.store, out / "metrics.prom")
        if session.constraints.path:
            shutil.copyfile(session.constraints.path, out / "triage.toml")
    finally:
        session.stop()
    later = snap.status["settling"] or {}
    extra = f"; {later['spans']} spans of traces begun after {args.duration} left out" if later.get("spans") else ""
    print(f"triage capture: wrote {n_spans} spans and {n_samples} samples to {out} "
          f"(prometheus: {snap.status['prometheus']}){extra}", file=sys.stderr)
    return 0


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
