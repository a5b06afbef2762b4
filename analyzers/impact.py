"""One definition of impact: a finding's estimated saving on the p95 of its scope, and the severity that
follows from it and from the constraints (docs/impact.md).

Every rule estimates ``impact_ms``: how much the p95 of its scope (its route; the busiest route when the
finding has none) would drop if the cause were fixed. Here, once for all rules, that figure becomes the
evidence keys ``saving_p95_ms`` and ``saving_p95_share`` (of the scope's p95), and, for the rules whose
severity is the saving's (``Rule.severity_from == "saving"``), the severity:

- critical: the saving alone brings a missed p95 SLO or latency budget back, or it is at least
  ``critical_share`` of p95;
- warning: at least ``warning_share`` of p95;
- info ("present, immaterial"): below that, or below ``min_saving_ms`` in absolute terms.

A route that meets its p95 SLO is not an incident: there, no saving is critical, and one is a warning only while
p95 has used more than ``slo_headroom`` of the SLO (a service at 7 ms against 100 ms has nothing users feel, however
large a share of those 7 ms a loopback call is). Without an SLO, the shares alone decide.

Rules that report a breached constraint (an SLO burning, a budget or cost cap overrun, memory, a throttled
clock) keep the severity they set; they still carry the saving keys.
"""
from __future__ import annotations

from .finding import Finding
from .latency import route_latency


# The one way every saving-based finding states its impact (the rule's own text says what and why).
SAVING_SENTENCE = "Fixing it would take about {ms:.1f} ms off p95 ({share:.0%} of {p95:.1f} ms)."


def scope_p95(store, scope: dict) -> tuple[str | None, float | None]:
    """(route, p95 ms) of a finding's scope: its route, else the route with the most requests."""
    lat = route_latency(store)
    route = scope.get("route") if scope.get("route") in lat else next(iter(lat), None)
    return route, (lat[route]["p95_ms"] if route else None)


def ttft_basis(store, constraints, f: Finding, route: str | None) -> float | None:
    """The TTFT p95 (ms) of ``route`` when the finding's saving is time before the first token
    (``evidence.saving_basis == "ttft"``: an engine queue, a head-of-line wait) and the SLO names TTFT
    (``[slo] ttft_p95_ms``) rather than end-to-end (``[slo] p95_ms``); else None (end-to-end p95)."""
    if f.evidence.get("saving_basis") != "ttft" or not constraints.slo.get("ttft_p95_ms") \
            or constraints.slo.get("p95_ms") or route is None:
        return None
    from .llm import with_token_latency

    return with_token_latency(store, route_latency(store)).get(route, {}).get("ttft_p95_ms") or None


def severity_of(saving_ms: float, share: float | None, p95_ms: float | None, constraints,
                slo_key: str = "p95_ms") -> tuple[str, str]:
    """(severity, why) of a saving of ``saving_ms`` on a p95 of ``p95_ms``, against the SLO ``[slo] slo_key``
    (``ttft_p95_ms`` when ``p95_ms`` is the route's TTFT p95)."""
    sv = constraints.severity
    if share is None or saving_ms < sv["min_saving_ms"]:
        return "info", f"present, immaterial: the saving ({saving_ms:.1f} ms) is below {sv['min_saving_ms']:g} ms"
    name = "the p95 SLO" if slo_key == "p95_ms" else "the TTFT p95 SLO"
    budget = constraints.budget.get("total_ms") if slo_key == "p95_ms" else None
    for limit, what in ((constraints.slo.get(slo_key), name), (budget, "the latency budget")):
        if limit and p95_ms > limit >= p95_ms - saving_ms:
            return "critical", f"the saving alone brings p95 ({p95_ms:.1f} ms) back within {what} ({limit:g} ms)"
    slo = constraints.slo.get(slo_key)
    if slo and p95_ms is not None and p95_ms <= slo:
        if p95_ms < sv["slo_headroom"] * slo or share < sv["warning_share"]:
            return "info", (f"present, immaterial: p95 ({p95_ms:.1f} ms) meets the p95 SLO ({slo:g} ms) with "
                            f"{1 - p95_ms / slo:.0%} to spare")
        return "warning", (f"the saving is {share:.0%} of p95, which meets the p95 SLO ({slo:g} ms) with only "
                           f"{1 - p95_ms / slo:.0%} to spare")
    if share >= sv["critical_share"]:
        return "critical", f"the saving is {share:.0%} of p95 (critical from {sv['critical_share']:.0%})"
    if share >= sv["warning_share"]:
        return "warning", f"the saving is {share:.0%} of p95 (warning from {sv['warning_share']:.0%})"
    return "info", (f"present, immaterial: the saving is {share:.1%} of p95 (warning from "
                    f"{sv['warning_share']:.0%})")


def assess(findings: list[Finding], store, constraints, rules_by_id: dict) -> None:
    """Attach the saving keys to every evaluated finding and set the severity of saving-based rules."""
    for f in findings:
        if not f.evaluated or f.severity == "error":
            continue
        route, p95 = scope_p95(store, f.scope)
        ttft = ttft_basis(store, constraints, f, route)
        slo_key = "ttft_p95_ms" if ttft else "p95_ms"
        if ttft:
            p95 = ttft
            f.evidence["saving_measured_on"] = "ttft_p95_ms"
        saving = max(float(f.impact_ms or 0.0), 0.0)
        if p95:  # no fix takes more off p95 than p95 itself
            saving = min(saving, p95)
        f.impact_ms = saving
        share = saving / p95 if p95 else None
        f.evidence["saving_p95_ms"] = round(saving, 3)
        f.evidence["saving_p95_share"] = None if share is None else round(share, 4)
        f.evidence["scope_p95_ms"] = p95
        if route and "route" not in f.scope:
            f.evidence["saving_scope_route"] = route
        rule = rules_by_id.get(f.rule)
        if rule is None or getattr(rule, "severity_from", "saving") != "saving":
            continue
        f.severity, why = severity_of(saving, share, p95, constraints, slo_key)
        f.evidence["severity_reason"] = why
        sentence = SAVING_SENTENCE.format(ms=saving, share=share or 0.0, p95=p95 or 0.0)
        f.summary = f"{f.summary.rstrip()} {sentence.replace('off p95', 'off TTFT p95') if ttft else sentence}"
        if f.severity == "info":
            f.title = f"{f.title} (present, immaterial)"
