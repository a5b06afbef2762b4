"""`triage live` and `triage capture`: an OTLP receiver and Prometheus queries on a running service."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import backend_window, emit, listen_address, parse_duration


def _prometheus_url(text: str) -> str:
    """--prometheus: checked before anything starts; the message never repeats a password (argparse would)."""
    from triage.collectors.prometheus import check_url

    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _source_args(sp) -> None:
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


def register(sub) -> None:
    lv = sub.add_parser("live", help="watch a live service: OTLP receiver + Prometheus queries")
    _source_args(lv)
    lv.add_argument("--refresh", metavar="DURATION", default="5s", help="analysis refresh interval (default 5s)")
    lv.add_argument("--for", dest="duration", metavar="DURATION",
                    help="headless: collect for DURATION, wait --settle for the traces begun in it to complete, "
                         "print the report, exit with report's codes (2 when nothing was received)")
    lv.add_argument("--format", choices=("md", "json"), default="md")
    lv.add_argument("--fail-on", choices=("warning", "critical"))
    lv.add_argument("--from-backend", metavar="URL",
                    help="poll a trace backend (clickhouse://, tempo://, jaeger://) for the moving --window at "
                         "every refresh (with --otlp-listen off, instead of receiving)")
    lv.add_argument("--max-spans", type=int, metavar="N", help="with --from-backend: the detail budget per poll")
    lv.set_defaults(handler=cmd_live)
    cap = sub.add_parser("capture", help="record a replayable capture folder from live sources")
    _source_args(cap)
    cap.add_argument("--out", required=True, metavar="DIR", help="capture folder to write (must not exist or be empty)")
    cap.add_argument("--for", dest="duration", metavar="DURATION",
                     help="how long to record; then --settle more for the late spans of the traces begun in it")
    cap.add_argument("--from-backend", metavar="URL",
                     help="instead of receiving: copy a window of a trace backend (clickhouse://, tempo://, "
                          "jaeger://; --since or --from/--to, --max-spans)")
    backend_window(cap)
    cap.set_defaults(handler=cmd_capture, takes_db=False)


def _shown(url: str | None) -> str | None:
    from triage.collectors.prometheus import redact_url

    return url and redact_url(url)


def _live_session(args, window_s: float | None = None, db: str | None = None):
    from triage.sessions.live import LiveSession
    from triage.sessions.offline import load_constraints
    from triage.collectors.receiver import token_from_env

    cons = load_constraints([], args.constraints)
    address = listen_address(args.otlp_listen)
    options = {"tls_cert": args.otlp_tls_cert, "tls_key": args.otlp_tls_key, "insecure": args.otlp_insecure,
               "token": token_from_env() if address else None}
    session = LiveSession(constraints=cons, listen=address, prometheus_url=args.prometheus,
                          window_s=window_s or parse_duration(args.window), settle_s=parse_duration(args.settle),
                          receiver_options=options, db=db, backend=getattr(args, "from_backend", None),
                          backend_max_spans=getattr(args, "max_spans", None)).start()
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
    if snap.status["backend"].startswith("stale"):
        print(f"triage live: trace backend {snap.status['backend']}", file=sys.stderr)
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
    if args.from_backend:
        return _capture_backend(args, out)
    if not args.duration:
        print("triage capture: give --for DURATION (receive for that long) or --from-backend URL", file=sys.stderr)
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


def _capture_backend(args, out: Path) -> int:
    """`capture --from-backend URL`: the window's traces as the report reads them (whole traces, sampled past
    --max-spans), written as a replayable folder, with a note of where they came from and how they were chosen."""
    from triage.collectors.backends import is_url, resolve
    from triage.collectors.export import write_traces
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.store import Store

    if not is_url(args.from_backend):
        print(f"triage capture: --from-backend {args.from_backend!r} is not a clickhouse://, chdb://, tempo:// or "
              f"jaeger:// URL", file=sys.stderr)
        return 2
    paths = resolve([args.from_backend], args.since, args.window_from, args.window_to, args.max_spans)
    store = Store()
    try:
        result = ingest_paths(store, paths)
        out.mkdir(parents=True, exist_ok=True)
        n_spans = write_traces(store, out / "traces.otlp.jsonl")
    finally:
        store.close()
    meta = result.backends[0]
    d = meta["detail"]
    how = ("every trace of the window" if d["basis"] == "exact" else
           f"{d['method']}" + (f" (rate {d['rate']:.4%})" if d["rate"] is not None else ""))
    lines = [f"# Copied from {meta['source']}", "",
             f"Window {meta['window']['start']} → {meta['window']['end']}; traces: {how}; "
             f"{n_spans:,} spans written to traces.otlp.jsonl."]
    routes = (meta.get("latency") or {}).get("routes")
    if routes:
        lines += ["", "The backend's exact headline over every request of the window at copy time:", "",
                  "| route | requests | p50 ms | p95 ms | p99 ms | error rate |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r} | {x['requests']:,} | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['error_rate']} |"
                  for r, x in routes.items()]
    (out / "source.md").write_text("\n".join(lines) + "\n")
    print(f"triage capture: wrote {n_spans} spans from {meta['source']} to {out} ({how})", file=sys.stderr)
    return 0
