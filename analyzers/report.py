"""The report: one JSON object (DESIGN.md §8) and its Markdown rendering for an incident channel."""
from __future__ import annotations

from datetime import datetime, timezone

from . import latency, llm, stages
from .finding import Finding
from .markdown import md

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
            "reloaded": getattr(ingest, "reloaded", []),
            "incomplete": incomplete_inputs(store),
            "problems": {"count": ingest.problems.count, "items": ingest.problems.items},
        },
        "latency": llm.with_token_latency(store, latency.route_latency(store)),  # + TTFT/ITL on LLM routes
        "stages": {route: {stage: {k: v for k, v in d.items() if k != "cohort"} for stage, d in st.items()}
                   for route, st in latency.stage_breakdown(store).items()},
        "stage_sources": stages.stage_sources(store),  # span name → stage → how it was assigned
        "findings": [f.to_dict() for f in findings],
    }
    ttft = llm.ttft_breakdown(store)
    if ttft:
        rep["ttft_breakdown"] = ttft  # only with LLM engine spans
    backends = getattr(ingest, "backends", None)
    if backends:  # a trace backend's input: its exact headline, and which figures are exact or sampled
        from triage.collectors.backends.figures import annotate

        annotate(rep, backends)
    if constraints is not None:
        from .budget import budget_table

        table = budget_table(store, constraints)
        if table:
            rep["budget"] = table  # only when triage.toml has a [budget]
    return rep


def incomplete_inputs(store) -> list[dict]:
    """Inputs whose load into the store has not completed: interrupted (a --db that a killed run left), or
    still loading (an early report). What they wrote so far is in the figures."""
    return [{"path": p, "spans": int(n or 0)} for p, n in store.query(
        "SELECT i.path, (SELECT count(*) FROM spans s WHERE s.source = i.path) FROM inputs i "
        "WHERE NOT i.complete ORDER BY i.path")]


def worst_severity(report: dict) -> str | None:
    sev = [f["severity"] for f in report["findings"]]
    for s in ("error", "critical", "warning", "info"):
        if s in sev:
            return s
    return None


def failed_rules(report: dict) -> list[dict]:
    """Findings of rules that raised (severity ``error``): the analysis is incomplete."""
    return [f for f in report["findings"] if f["severity"] == "error"]


def exit_code(report: dict, fail_on: str | None) -> int:
    """1 when a rule failed (whatever ``fail_on`` says: a check that did not run cannot pass a gate), or a
    finding is at/above ``fail_on``; else 0."""
    if failed_rules(report):
        return 1
    if not fail_on:
        return 0
    levels = {"critical": ("critical",), "warning": ("critical", "warning")}[fail_on]
    return 1 if any(f["severity"] in levels for f in report["findings"]) else 0


def _token_latency_md(report: dict) -> list[str]:
    """The LLM routes' TTFT/ITL table and the TTFT tail decomposition (nothing for other routes)."""
    rows = {r: d for r, d in report["latency"].items() if "ttft_p95_ms" in d or "itl_p95_ms" in d}
    if not rows:
        return []
    f = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["", "### Time to first token and between tokens", "",
             "| route | TTFT p50 ms | TTFT p95 ms | TTFT p99 ms | ITL p50 ms | ITL p95 ms | ITL p99 ms | source |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for route, d in rows.items():
        src = d.get("token_latency_source") or d.get("ttft_source") or d.get("itl_source") or ""
        lines.append(f"| {md(route)} | " + " | ".join(f(d.get(f"{k}_p{q}_ms")) for k in ("ttft", "itl")
                                                        for q in (50, 95, 99)) + f" | {md(src)} |")
    for route, b in report.get("ttft_breakdown", {}).items():
        lines += ["", f"TTFT tail ({b['cohort']} requests at or above the TTFT p95) — {md(route)}: " + ", ".join(
            f"{part} {b[part]['share']:.0%} (p50 {b[part]['p50_ms']:.1f} ms)" for part in ("queue", "prefill", "frontend"))]
    return lines


def _sources_md(report: dict) -> str:
    """Where a backend's figures come from: which are exact, and the sampling rate of the rest."""
    from triage.collectors.backends.figures import describe

    srcs, latency, detail = describe(report)
    return f"Source: {md(srcs)} — latency {latency}; stages and findings {detail}."


_ICON = {"error": "⛔", "critical": "🔴", "warning": "🟠", "info": "ℹ️"}


def to_markdown(report: dict) -> str:
    lines = [f"## triage report — {md(report['window']['start'])} → {md(report['window']['end'])}", ""]
    inp = report["inputs"]
    lines.append(f"Inputs: {inp['files']} files, {inp['spans']:,} spans in {inp['traces']:,} traces, "
                 f"{inp['samples']:,} metric samples.")
    if "figures" in report:
        lines.append(_sources_md(report))
    lines.append("")
    actionable = [f for f in report["findings"] if f["severity"] != "info"]
    lines.append("### Findings")
    if not actionable:
        lines.append("No warning or critical findings.")
    # a rule that raised comes first: the report is incomplete, whatever else it says
    actionable.sort(key=lambda f: f["severity"] != "error")
    for i, f in enumerate(actionable, 1):
        lines.append(f"{i}. {_ICON.get(f['severity'], '')} **{f['severity'].upper()} `{f['rule']}`** — "
                     f"{md(f['summary'])}")
        ex = f["evidence"].get("exemplar_trace_ids")
        if ex:
            lines.append(f"   - exemplar traces: {', '.join(md(t) for t in ex)}")
        if f["remediations"]:
            fix = f["remediations"][0]
            lines.append(f"   - suggested fix: **{md(fix['title'])}** (score {fix['score']:.1f}; impact {fix['impact']}, "
                         f"feasibility {fix['feasibility']}, risk {fix['risk']})")
    info = [f for f in report["findings"] if f["severity"] == "info"]
    if info:
        lines.append("")
        lines.append("Not evaluated / informational: " + "; ".join(f"`{f['rule']}` — {md(f['summary'])}" for f in info))
    lines += ["", "### Latency", "", "| route | requests | p50 ms | p95 ms | p99 ms | errors |",
              "|---|---:|---:|---:|---:|---:|"]
    for route, d in report["latency"].items():
        lines.append(f"| {md(route)} | {d['requests']:,} | {d['p50_ms']:.1f} | {d['p95_ms']:.1f} | {d['p99_ms']:.1f} | "
                     f"{d['error_rate']:.2%} |")
    lines += _token_latency_md(report)
    for route, st in report["stages"].items():
        lines += ["", f"### Where p95 goes — {md(route)}", "", "| stage | share of p95 tail | p50 ms | p95 ms |",
                  "|---|---:|---:|---:|"]
        for stage, d in sorted(st.items(), key=lambda kv: -kv[1]["p95_share"]):
            lines.append(f"| {md(stage)} | {d['p95_share']:.0%} | {d['p50_ms']:.1f} | {d['p95_ms']:.1f} |")
    for route, rows in report.get("budget", {}).items():
        lines += ["", f"### Latency budget — {md(route)}", "", "| stage | budget ms | p95 ms | headroom ms |",
                  "|---|---:|---:|---:|"]
        for stage, r in rows.items():
            flag = " ⚠" if r["over"] else ""
            lines.append(f"| {md(stage)} | {r['budget_ms']:.0f} | {r['p95_ms']:.1f} | {r['headroom_ms']:+.1f}{flag} |")
    if inp["skipped"]:
        lines += ["", "### Skipped inputs"] + [f"- {md(s['path'])}: {md(s['reason'])}" for s in inp["skipped"]]
    if inp.get("reloaded"):
        lines += ["", "### Reloaded inputs"] + [
            f"- {md(r['path'])}: {md(r['reason'])} ({r['spans']:,} spans, {r['samples']:,} samples removed)"
            for r in inp["reloaded"]]
    if inp.get("incomplete"):
        lines += ["", "### Incomplete inputs (load interrupted or still running)"] + [
            f"- {md(r['path'])}: {r['spans']:,} spans so far; run triage on it again to reload it" for r in inp["incomplete"]]
    if inp["problems"]["count"]:
        lines += ["", f"### Input problems ({inp['problems']['count']})"]
        lines += [f"- {md(p['path'])} {md(p['where'])}: {md(p['message'])}" for p in inp["problems"]["items"][:50]]
    return "\n".join(lines) + "\n"
