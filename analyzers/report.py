"""The report: one JSON object (DESIGN.md §8) and its Markdown rendering for an incident channel."""
from __future__ import annotations

from datetime import datetime, timezone

from . import latency
from .finding import Finding

VERSION = 1


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(store, ingest, findings: list[Finding], constraints=None) -> dict:
    t0, t1 = latency.window(store)
    rep = {
        "version": VERSION,
        "window": {"start": _iso(t0), "end": _iso(t1)},
        "inputs": {
            "spans": int(store.scalar("SELECT count(*) FROM spans") or 0),
            "traces": int(store.scalar("SELECT count(DISTINCT trace_id) FROM spans") or 0),
            "samples": int(store.scalar("SELECT count(*) FROM samples") or 0),
            "files": ingest.files,
            "skipped": ingest.skipped,
            "problems": {"count": ingest.problems.count, "items": ingest.problems.items},
        },
        "latency": latency.route_latency(store),
        "stages": {route: {stage: {k: v for k, v in d.items() if k != "cohort"} for stage, d in st.items()}
                   for route, st in latency.stage_breakdown(store).items()},
        "findings": [f.to_dict() for f in findings],
    }
    if constraints is not None:
        from .budget import budget_table

        table = budget_table(store, constraints)
        if table:
            rep["budget"] = table  # only when triage.toml has a [budget]
    return rep


def worst_severity(report: dict) -> str | None:
    sev = [f["severity"] for f in report["findings"]]
    for s in ("critical", "warning", "info"):
        if s in sev:
            return s
    return None


def exit_code(report: dict, fail_on: str | None) -> int:
    if not fail_on:
        return 0
    levels = {"critical": ("critical",), "warning": ("critical", "warning")}[fail_on]
    return 1 if any(f["severity"] in levels for f in report["findings"]) else 0


_ICON = {"critical": "🔴", "warning": "🟠", "info": "ℹ️"}


def to_markdown(report: dict) -> str:
    lines = [f"## triage report — {report['window']['start']} → {report['window']['end']}", ""]
    inp = report["inputs"]
    lines.append(f"Inputs: {inp['files']} files, {inp['spans']:,} spans in {inp['traces']:,} traces, "
                 f"{inp['samples']:,} metric samples.")
    lines.append("")
    actionable = [f for f in report["findings"] if f["severity"] != "info"]
    lines.append("### Findings")
    if not actionable:
        lines.append("No warning or critical findings.")
    for i, f in enumerate(actionable, 1):
        lines.append(f"{i}. {_ICON[f['severity']]} **{f['severity'].upper()} `{f['rule']}`** — {f['summary']}")
        ex = f["evidence"].get("exemplar_trace_ids")
        if ex:
            lines.append(f"   - exemplar traces: {', '.join(f'`{t}`' for t in ex)}")
        if f["remediations"]:
            fix = f["remediations"][0]
            lines.append(f"   - suggested fix: **{fix['title']}** (score {fix['score']:.1f}; impact {fix['impact']}, "
                         f"feasibility {fix['feasibility']}, risk {fix['risk']})")
    info = [f for f in report["findings"] if f["severity"] == "info"]
    if info:
        lines.append("")
        lines.append("Not evaluated / informational: " + "; ".join(f"`{f['rule']}` — {f['summary']}" for f in info))
    lines += ["", "### Latency", "", "| route | requests | p50 ms | p95 ms | p99 ms | errors |",
              "|---|---:|---:|---:|---:|---:|"]
    for route, d in report["latency"].items():
        lines.append(f"| {route} | {d['requests']:,} | {d['p50_ms']:.1f} | {d['p95_ms']:.1f} | {d['p99_ms']:.1f} | "
                     f"{d['error_rate']:.2%} |")
    for route, st in report["stages"].items():
        lines += ["", f"### Where p95 goes — {route}", "", "| stage | share of p95 tail | p50 ms | p95 ms |",
                  "|---|---:|---:|---:|"]
        for stage, d in sorted(st.items(), key=lambda kv: -kv[1]["p95_share"]):
            lines.append(f"| {stage} | {d['p95_share']:.0%} | {d['p50_ms']:.1f} | {d['p95_ms']:.1f} |")
    for route, rows in report.get("budget", {}).items():
        lines += ["", f"### Latency budget — {route}", "", "| stage | budget ms | p95 ms | headroom ms |",
                  "|---|---:|---:|---:|"]
        for stage, r in rows.items():
            flag = " ⚠" if r["over"] else ""
            lines.append(f"| {stage} | {r['budget_ms']:.0f} | {r['p95_ms']:.1f} | {r['headroom_ms']:+.1f}{flag} |")
    if inp["skipped"]:
        lines += ["", "### Skipped inputs"] + [f"- `{s['path']}`: {s['reason']}" for s in inp["skipped"]]
    if inp["problems"]["count"]:
        lines += ["", f"### Input problems ({inp['problems']['count']})"]
        lines += [f"- `{p['path']}` {p['where']}: {p['message']}" for p in inp["problems"]["items"][:50]]
    return "\n".join(lines) + "\n"
