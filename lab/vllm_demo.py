"""The whole loop on a real vLLM, headless: observe → report → apply the top engine-settings fix (restart
with new arguments) → re-measure the capture's prompt/output mix → compare TTFT, ITL and end-to-end →
keep or roll back. ``triage demo --stack vllm --incident kv-pressure|concurrency-cap --auto-remediate``.

Started on loopback, all stopped on exit (and on hang-up, through ``procs``): triage's OTLP receiver, the
lab's vLLM serving unit (``vllm_unit``: a supervisor reading an arguments file, restarted by an argv, as a
systemd unit would be) exporting vLLM's own traces to that receiver, the instrumented LLM gateway, a
/metrics scraper (its scrapes become the capture's metrics file), and the load generator."""
from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from pathlib import Path

import requests

INCIDENTS = {
    # name: the unit's engine arguments, the load (requests, prompt words, max_tokens, concurrency, seed), the
    # rule that should come first. kv-pressure is DESIGN.md §10's recipe (12 KV blocks of 128 tokens, room
    # for one or two of these prompts), with as many clients as --max-num-seqs, so the KV cache alone holds
    # requests back (with more clients than the cap, part of the wait would be the cap's); concurrency-cap is
    # --max-num-seqs 1 with long prompts and short outputs, so the engine (not its API server) is the
    # bottleneck on 2 cores. Enough requests for the engine to stay busy across many /metrics scrapes.
    "kv-pressure": {"args": "--max-num-seqs 8\n--num-gpu-blocks-override 12\n--no-enable-prefix-caching\n",
                    "n": 40, "words": (300, 800), "max_tokens": (96, 160), "concurrency": 8, "seed": 7,
                    "expect": "kv-cache-pressure"},
    "concurrency-cap": {"args": "--max-num-seqs 1\n", "n": 64, "words": (300, 800), "max_tokens": (32, 64),
                        "concurrency": 8, "seed": 3, "expect": "concurrency-cap"},
}
SPAWN_S = 2.0  # the load's clients start over this ramp-up, before and after alike


def _jobs(spec: dict) -> list[tuple[str, int]]:
    import random

    from .loadgen import LLM_WORDS

    rnd = random.Random(spec["seed"])
    return [(" ".join(rnd.choice(LLM_WORDS) for _ in range(rnd.randint(*spec["words"]))),
             rnd.randint(*spec["max_tokens"])) for _ in range(spec["n"])]


class Scraper:
    """vLLM's /metrics every ``every_s``, each sample stamped with its scrape time (ms), as a capture holds them.
    A load of a few seconds needs scrapes this close for the KV and scheduler gauges to show it."""

    def __init__(self, url: str, every_s: float = 0.2):
        self.url, self.every_s, self.scrapes, self._stop = url, every_s, [], threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                text, ts = requests.get(self.url, timeout=5).text, int(time.time() * 1000)
                self.scrapes.append("\n".join(f"{ln} {ts}" if ln and not ln.startswith("#") else ln
                                              for ln in text.splitlines()))
            except requests.RequestException:
                pass
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._th.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._th.join(10)


def _wait_for_spans(store, n: int, timeout_s: float = 30.0) -> None:
    from triage.collectors.receiver import wait_until

    def arrived() -> bool:
        vllm = store.scalar("SELECT count(*) FROM spans WHERE name = 'llm_request'") or 0
        gw = store.scalar("SELECT count(*) FROM spans WHERE name = 'POST /v1/generate'") or 0
        return min(vllm, gw) >= n

    wait_until(arrived, timeout=timeout_s, interval=0.25)


def run(incident: str = "kv-pressure", keep: bool = False, constraints=None, progress=None) -> dict:
    """Run the loop; the result also says which unit process ran and that it is gone."""
    info: dict = {}
    result = _run(incident, keep, constraints, progress or (lambda m: None), info)
    unit = info.get("unit")
    result["stopped"] = {"unit_pid": unit.proc.pid if unit and unit.proc else None,
                         "unit_exited": unit is None or unit.proc is None or unit.proc.poll() is not None}
    return result


def _run(incident, keep, constraints, say, info) -> dict:
    from triage.analyzers import engine
    from triage.analyzers.compare import compare
    from triage.analyzers.constraints import Constraints
    from triage.collectors.ingest import ingest_paths
    from triage.collectors.receiver import Receiver
    from triage.collectors.store import Store
    from triage.remediations import engine_args as ea
    from triage.remediations.ledger import LEDGER_NAME

    from . import loadgen
    from .llm_gateway import LLMGateway
    from .vllm_unit import ServingUnit

    if incident not in INCIDENTS:
        raise ValueError(f"unknown incident {incident!r} (have: {', '.join(INCIDENTS)})")
    spec = INCIDENTS[incident]
    cons = constraints or Constraints()
    with tempfile.TemporaryDirectory(prefix="triage-vllm-demo-") as tmp:
        tmp = Path(tmp)
        (tmp / "unit").mkdir()
        args_file = tmp / "unit" / "vllm.args"
        original = f"# engine arguments of the lab's vLLM unit (incident {incident})\n{spec['args']}".encode()
        args_file.write_bytes(original)
        store = Store()
        with Receiver(store, port=0) as receiver:
            unit = info["unit"] = ServingUnit(args_file, otlp_url=receiver.endpoint)
            say("starting vLLM (its serving unit reads " + str(args_file) + ")")
            with unit:
                gateway = LLMGateway(unit.url, receiver.endpoint).start()
                try:
                    jobs = _jobs(spec)
                    say(f"measuring: {len(jobs)} streamed generations from {spec['concurrency']} clients "
                        "through the gateway")
                    with Scraper(f"{unit.url}/metrics") as scraper:
                        before = loadgen.run_llm(gateway.url, jobs, spec["concurrency"], spawn_s=SPAWN_S)
                        time.sleep(1.0)  # one more scrape after the last request
                    gateway.provider.force_flush()
                    _wait_for_spans(store, before.ok)
                    metrics_file = tmp / "metrics.prom"
                    metrics_file.write_text("\n".join(scraper.scrapes) + "\n")
                    ingest_paths(store, [metrics_file])
                    engine.prepare(store, cons)
                    findings = engine.run_rules(store, cons)
                    firing = [f for f in findings if f.severity in ("critical", "warning")]
                    result = {"stack": "vllm", "incident": incident, "expected_rule": spec["expect"],
                              "findings": [f.to_dict() for f in findings if f.severity != "info"],
                              "inputs": {"spans": store.scalar("SELECT count(*) FROM spans"),
                                         "requests": store.scalar("SELECT count(*) FROM requests"),
                                         "metric_scrapes": len(scraper.scrapes),
                                         "not_evaluated": {f.rule: f.summary for f in findings if not f.evaluated}},
                              "before": before.summary(), "remediation": None, "after": None, "comparison": None}
                    top = firing[0] if firing else None
                    if top is None or top.rule not in ea.RULES:
                        result["remediation"] = {"applied": False, "reason": "the top finding has no engine-settings fix"}
                        return result
                    mix = loadgen.llm_mix(store)
                    measured = ea.measure(store)
                    proposal = ea.propose(args_file, top.rule, measured, top.evidence)
                    if not proposal.changes:
                        result["remediation"] = {"applied": False, "reason": "the arithmetic changes nothing",
                                                 **proposal.to_dict()}
                        return result
                    cfg = {"restart": unit.restart_argv, "health_url": f"{unit.url}/health", "timeout_s": 240.0,
                           **{k: v for k, v in cons.vllm.items() if k in ("timeout_s",)}}
                    say("applying: " + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in proposal.changes.items())
                        + "; restarting vLLM")
                    entry = ea.apply(proposal, ea.Unit.from_config(cfg), store=store, before=result["before"])
                    after_jobs = loadgen.llm_jobs(mix, seed=spec["seed"])
                    say(f"re-measuring: the capture's mix ({len(after_jobs)} requests) again")
                    after = loadgen.run_llm(gateway.url, after_jobs, spec["concurrency"], spawn_s=SPAWN_S)
                    cmp = compare({"ttft": before.ttft_ms, "itl": before.itl_ms, "e2e": before.e2e_ms},
                                  {"ttft": after.ttft_ms, "itl": after.itl_ms, "e2e": after.e2e_ms}, cons)["routes"]
                    result["after"] = after.summary()
                    result["comparison"] = {k: {"verdict": v["verdict"], "basis": v["verdict_basis"],
                                                "change": v["change"]} for k, v in cmp.items()}
                    max_err = cons.guardrails.get("max_error_rate", 0.01)
                    good = (cmp["ttft"]["verdict"] == "improved" and cmp["e2e"]["verdict"] != "regressed"
                            and result["after"]["error_rate"] <= max_err)
                    result["comparison"]["verdict"] = "keep" if good else "roll back"
                    result["comparison"]["basis"] = (
                        f"TTFT {cmp['ttft']['verdict']}, end-to-end {cmp['e2e']['verdict']}, ITL "
                        f"{cmp['itl']['verdict']}, error rate {result['after']['error_rate']:.2%} "
                        f"(guardrail {max_err:.0%})")
                    result["remediation"] = {"applied": True, "ledger_id": entry["id"],
                                             "restart_s": entry["restart_s"], "measured": measured.to_dict(),
                                             **proposal.to_dict()}
                    if keep and good:
                        result["remediation"]["kept_in"] = str(args_file)
                        return result
                    say("rolling back: restoring the arguments and restarting vLLM")
                    rolled = ea.rollback(entry["id"], ledger_path=args_file.parent / LEDGER_NAME, store=store)
                    restored = args_file.read_bytes()
                    result["remediation"].update(
                        rolled_back=rolled["id"], healthy_after_rollback=rolled["healthy"],
                        args_restored=restored == original,
                        args_sha256={"original": hashlib.sha256(original).hexdigest(),
                                     "changed": hashlib.sha256(proposal.new_text.encode()).hexdigest(),
                                     "restored": hashlib.sha256(restored).hexdigest()})
                    return result
                finally:
                    gateway.stop()
