"""LLM engine-settings remediation (vLLM). What: for ``kv-cache-pressure``, ``concurrency-cap`` and
``long-prompt-blocking``, propose the engine arguments to change (``--num-gpu-blocks-override`` /
``--kv-cache-memory-bytes`` for the KV cache size, ``--max-num-seqs``, ``--max-num-batched-tokens``,
``--long-prefill-token-threshold``) with the arithmetic behind each value, from measured figures: p95 prompt
and output tokens and the peak of running + waiting requests (the engine spans), the KV block size and block
count (``vllm:cache_config_info``), TTFT and queue p95. Why: vLLM cannot be reconfigured at run time; its
settings change by restarting the server with new arguments, as production does (a Deployment, a systemd
unit), so the change is to a versioned arguments file the serving unit reads. Fix: write the file atomically
beside a byte-exact backup, record it in the ledger, run the configured restart command (an argv list from
``[vllm]`` in triage.toml, never a shell string) and wait for the health URL; a start that does not get
healthy within the timeout restores the backup and restarts by itself. ``triage rollback ID`` restores the
previous arguments byte for byte and restarts.

The arguments file holds one engine argument per line (``--flag value``, ``--flag=value`` or ``--flag``,
split like a shell word list); blank lines and ``#`` comment lines are kept; a changed flag's line is
rewritten (a comment at its end goes with it: the diff shows it), a new flag appended."""
from __future__ import annotations

import difflib
import math
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic, ledger

KIND = "vllm-args"  # the ledger action of an engine-arguments change
RULES = ("kv-cache-pressure", "concurrency-cap", "long-prompt-blocking")
BACKUP = r"[^/]+\.triage-backup-[0-9a-f]{8}"


# ---- the arguments file -------------------------------------------------------------------------------------

def _line(words: list[str]) -> tuple[str, str | None] | None:
    """A line's (flag, value or None): ``--flag value``, ``--flag=value`` or ``--flag``; None if it is not one."""
    if not words[0].startswith("--") or len(words) > 2 or (len(words) == 2 and "=" in words[0]):
        return None
    if len(words) == 1 and "=" in words[0]:
        return tuple(words[0].split("=", 1))
    return words[0], words[1] if len(words) == 2 else None


def parse_args_text(text: str) -> list[tuple[str, str | None]]:
    """``[(flag, value or None)]`` in file order; raises ValueError on a line that is not one argument."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        arg = _line(words)
        if arg is None:
            raise ValueError(f"line {n}: {line.strip()!r} is not one engine argument (--flag [value])")
        out.append(arg)
    return out


def argv_of(text: str) -> list[str]:
    """The arguments file as the argv the serving unit passes to ``vllm serve``."""
    return [w for flag, value in parse_args_text(text) for w in ((flag,) if value is None else (flag, value))]


def _set_args(text: str, changes: dict[str, str]) -> str:
    """``text`` with each flag in ``changes`` set to its value (its line rewritten, or appended)."""
    lines, done = text.splitlines(True), set()
    for i, line in enumerate(lines):
        words = shlex.split(line, comments=True)
        flag = _line(words)[0] if words else None
        if flag in changes:
            end = "\n" if line.endswith("\n") else ""
            lines[i] = f"{flag} {shlex.quote(changes[flag])}{end}"
            done.add(flag)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines += [f"{flag} {shlex.quote(v)}\n" for flag, v in changes.items() if flag not in done]
    return "".join(lines)


# ---- what was measured ----------------------------------------------------------------------------------------

@dataclass
class Measured:
    """The figures the arithmetic uses, each from the capture (engine spans and vLLM's /metrics)."""
    requests: int
    prompt_p95: float               # tokens
    output_p95: float               # tokens
    prompt_median: float
    demand_peak: int                # most requests running + waiting at once (engine spans)
    running_peak: int
    ttft_p95_ms: float
    queue_p95_ms: float
    block_size: int | None = None   # vllm:cache_config_info
    num_gpu_blocks: int | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def measure(store) -> Measured:
    """From a store holding vLLM engine spans (and, when scraped, ``vllm:cache_config_info``)."""
    import numpy as np

    from triage.analyzers import llm_signals as sig

    reqs = sig.engine_requests(store)
    if not reqs:
        raise ValueError("no LLM engine spans (gen_ai.latency.*) in the capture: nothing to size the engine from")
    col = lambda k: np.array([r[k] for r in reqs if r[k] is not None], dtype=float)  # noqa: E731
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else 0.0  # noqa: E731
    pieces = sig.occupancy(reqs) or []
    cfg = sig.cache_config(store) or {}
    return Measured(requests=len(reqs), prompt_p95=pct(col("prompt_tokens"), 95),
                    output_p95=pct(col("output_tokens"), 95), prompt_median=pct(col("prompt_tokens"), 50),
                    demand_peak=int(max((r + q for _, r, q in pieces), default=0)),
                    running_peak=int(max((r for _, r, _ in pieces), default=0)),
                    ttft_p95_ms=pct(col("ttft"), 95) * 1e3, queue_p95_ms=pct(col("queue"), 95) * 1e3,
                    block_size=cfg.get("block_size"), num_gpu_blocks=cfg.get("num_gpu_blocks"))


# ---- the proposal ---------------------------------------------------------------------------------------------

@dataclass
class Proposal:
    rule: str
    args_path: str
    old_text: str
    new_text: str
    changes: dict                   # flag -> [before or None, after]
    arithmetic: list[str] = field(default_factory=list)

    @property
    def diff(self) -> str:
        name = Path(self.args_path).name
        return "".join(difflib.unified_diff(self.old_text.splitlines(True), self.new_text.splitlines(True),
                                            f"{name} (now)", f"{name} (proposed)"))

    def to_dict(self) -> dict:
        return {"rule": self.rule, "args_file": self.args_path, "changes": self.changes,
                "arithmetic": self.arithmetic, "diff": self.diff}


def _int(args: dict, flag: str) -> int | None:
    try:
        return int(args[flag]) if args.get(flag) is not None else None
    except ValueError:
        return None


def _kv(args: dict, m: Measured, seqs: int, lines: list[str]) -> dict[str, str]:
    """The KV-cache size for ``seqs`` sequences of p95 length: the flag that sets it in this file, its value."""
    per_seq = m.prompt_p95 + m.output_p95
    bs = m.block_size or 16
    blocks_seq = math.ceil(per_seq / bs)
    need = seqs * blocks_seq
    lines.append(f"KV tokens needed = concurrent sequences × (prompt + output at p95) = {seqs} × "
                 f"({m.prompt_p95:.0f} + {m.output_p95:.0f}) = {seqs * per_seq:.0f} tokens")
    lines.append(f"in blocks of {bs} tokens (vllm:cache_config_info): {seqs} × ceil({per_seq:.0f} / {bs}) = "
                 f"{seqs} × {blocks_seq} = {need} blocks; the cache has {m.num_gpu_blocks or '?'}")
    have = m.num_gpu_blocks
    if have and need <= have:
        lines.append(f"the cache already holds {have // blocks_seq} such sequences: KV size is not the limit")
        return {}
    if _int(args, "--kv-cache-memory-bytes") and have:
        cur = _int(args, "--kv-cache-memory-bytes")
        per_block = cur / have
        new = math.ceil(need * per_block)
        lines.append(f"--kv-cache-memory-bytes: {cur} B / {have} blocks = {per_block:.0f} B per block → "
                     f"{need} × {per_block:.0f} = {new} B")
        return {"--kv-cache-memory-bytes": str(new)}
    if "--num-gpu-blocks-override" in args or have is None:
        lines.append(f"--num-gpu-blocks-override {args.get('--num-gpu-blocks-override')} → {need}")
        return {"--num-gpu-blocks-override": str(need)}
    # the KV memory is set by --gpu-memory-utilization (or the default): its bytes per block are not in the
    # metrics, so make the admitted sequences fit the blocks there are instead
    fit = max(1, have // blocks_seq)
    lines.append(f"the KV memory is not set in blocks or bytes here: admit what the {have} blocks hold, "
                 f"--max-num-seqs = floor({have} / {blocks_seq}) = {fit} (more KV memory: raise "
                 "--gpu-memory-utilization and measure again)")
    return {"--max-num-seqs": str(fit)}


def decide(rule: str, args: dict, m: Measured, evidence: dict | None = None) -> tuple[dict[str, str], list[str]]:
    """The arithmetic, server-independent: (flag -> new value, explanation lines). Each rule's lever acts on
    its cause: KV blocks for a full cache, the scheduler cap for a binding cap, prefill chunking for
    head-of-line blocking (a smaller token budget alone leaves a long prompt's one-step prefill in place)."""
    ev = evidence or {}
    lines = [f"measured over {m.requests} requests: prompt p95 {m.prompt_p95:.0f} tokens (median "
             f"{m.prompt_median:.0f}), output p95 {m.output_p95:.0f} tokens; TTFT p95 {m.ttft_p95_ms:.0f} ms, "
             f"engine queue p95 {m.queue_p95_ms:.0f} ms; peak running {m.running_peak}, running + waiting "
             f"{m.demand_peak}"]
    seqs_now = _int(args, "--max-num-seqs")
    if rule == "kv-cache-pressure":
        seqs = seqs_now or max(m.running_peak, 1)
        lines.append(f"sequences to hold: --max-num-seqs = {seqs}" if seqs_now else
                     f"sequences to hold: the peak running, {seqs} (no --max-num-seqs in the file)")
        return _kv(args, m, seqs, lines), lines
    if rule == "concurrency-cap":
        cap = seqs_now or int(ev.get("cap_running") or m.running_peak or 1)
        demand = max(m.demand_peak, cap + 1)
        lines.append(f"the cap: --max-num-seqs {cap}; the demand: {m.demand_peak} requests running or waiting "
                     "at the peak")
        new = demand
        bs = m.block_size or 16
        blocks_seq = math.ceil((m.prompt_p95 + m.output_p95) / bs)
        if m.num_gpu_blocks:
            fit = m.num_gpu_blocks // blocks_seq
            lines.append(f"what the KV cache holds: floor({m.num_gpu_blocks} blocks / ceil(({m.prompt_p95:.0f} + "
                         f"{m.output_p95:.0f}) / {bs})) = floor({m.num_gpu_blocks} / {blocks_seq}) = {fit} sequences")
            new = max(cap, min(demand, fit))
        lines.append(f"--max-num-seqs {cap} → min(demand {demand}, KV capacity) = {new}")
        out = {"--max-num-seqs": str(new)} if new != cap else {}
        mbt = _int(args, "--max-num-batched-tokens")
        if mbt is not None and mbt < new:
            lines.append(f"--max-num-batched-tokens {mbt} < {new} sequences (one token each per step) → {new}")
            out["--max-num-batched-tokens"] = str(new)
        return out, lines
    if rule == "long-prompt-blocking":
        bs = m.block_size or 16
        med = float(ev.get("median_prompt_tokens") or m.prompt_median)
        thr = max(bs, int(math.ceil(med / bs) * bs))
        lines.append(f"short prompts' head-of-line wait: {ev.get('hol_wait_ms_p95_overlapped', '?')} ms p95 "
                     f"behind a long prefill vs {ev.get('hol_wait_ms_p95_clear', '?')} ms otherwise")
        lines.append(f"the wait is one long prompt's whole prefill in one engine step; chunk it: "
                     f"--long-prefill-token-threshold = the median prompt ({med:.0f} tokens) rounded up to a "
                     f"{bs}-token block = {thr}: a median prompt still prefills in one step, a long one in "
                     f"ceil({m.prompt_p95:.0f} / {thr}) = {math.ceil(m.prompt_p95 / thr)} steps with decodes and "
                     "short prefills between them")
        lines.append("lowering --max-num-batched-tokens alone does not split a single long prefill from the "
                     "others' steps: not changed")
        return {"--long-prefill-token-threshold": str(thr)}, lines
    raise ValueError(f"no engine-settings fix for {rule!r} (have: {', '.join(RULES)})")


def propose(args_path: Path, rule: str, m: Measured, evidence: dict | None = None) -> Proposal:
    args_path = Path(args_path)
    old = args_path.read_text()
    args = dict(parse_args_text(old))
    changes, lines = decide(rule, args, m, evidence)
    new = _set_args(old, changes) if changes else old
    return Proposal(rule, str(args_path), old, new, {k: [args.get(k), v] for k, v in changes.items()}, lines)


# ---- applying, restarting, rolling back ----------------------------------------------------------------------

@dataclass
class Unit:
    """How the serving unit is restarted and checked (``[vllm]`` in triage.toml)."""
    restart: list[str]              # argv, never a shell string
    health_url: str
    timeout_s: float = 180.0

    @classmethod
    def from_config(cls, cfg: dict) -> "Unit":
        return cls(list(cfg["restart"]), cfg["health_url"], float(cfg.get("timeout_s", 180.0)))


def restart_and_wait(unit: Unit) -> float | None:
    """Run the restart argv, then poll the health URL until it answers 200; seconds taken, None when not
    healthy within the timeout (or the command failed)."""
    import requests

    t0 = time.monotonic()
    try:
        r = subprocess.run(unit.restart, stdin=subprocess.DEVNULL, capture_output=True, timeout=unit.timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    while time.monotonic() - t0 < unit.timeout_s:
        try:
            if requests.get(unit.health_url, timeout=2).status_code == 200:
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return None


class StartFailed(RuntimeError):
    """The new arguments did not start a healthy server; the previous ones were restored and restarted."""


def apply(p: Proposal, unit: Unit, store=None, before: dict | None = None) -> dict:
    """Write the new arguments atomically beside a byte-exact backup, record the change, restart, wait for
    health. A start that does not get healthy is rolled back at once (``StartFailed``)."""
    path = Path(p.args_path).resolve(strict=True)
    backup = atomic.replace_with_backup(path, p.old_text, p.new_text)
    entry = ledger.rooted_entry(KIND, path.parent, rule=p.rule, args_file=str(path), backup=str(backup),
                                args_id=ledger.identity(path), backup_id=ledger.identity(backup),
                                before_sha256=atomic.sha256(backup), after_sha256=atomic.sha256(path),
                                changes=p.changes, arithmetic=p.arithmetic, measured_before=before or {},
                                restart=unit.restart, health_url=unit.health_url, timeout_s=unit.timeout_s,
                                rollback="restore the backup over the arguments file, restart, wait for health")
    ledger.record(entry, path.parent, store)
    took = restart_and_wait(unit)
    if took is None:
        back = rollback(entry["id"], ledger_path=path.parent / ledger.LEDGER_NAME, store=store)
        state = "healthy again" if back["healthy"] else f"NOT healthy within {unit.timeout_s:g}s either"
        raise StartFailed(f"the server did not answer {unit.health_url} within {unit.timeout_s:g}s with the new "
                          f"arguments; restored the previous ones and restarted ({entry['id']} rolled back; "
                          f"{state})")
    return {**entry, "restart_s": round(took, 2)}


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """Restore the backup over the arguments file (only after ``ledger.guard``, and only when both files are,
    by device, inode and digest, those ``apply`` left), then restart with the recorded argv and wait for health."""
    e = ledger.find(entry_id, ledger_path)
    if e is None or e.get("action") != KIND:
        raise RuntimeError(f"no engine-arguments change {entry_id!r} in the ledger")
    restart = e.get("restart")
    if not (isinstance(restart, list) and restart and all(isinstance(x, str) and x for x in restart)):
        raise RuntimeError(f"entry {entry_id}: its restart command is not an argv list")
    if not isinstance(e.get("health_url"), str) or not e["health_url"].startswith(("http://", "https://")):
        raise RuntimeError(f"entry {entry_id}: health_url is not an http(s) URL")
    try:
        root = ledger.guard(e, ledger_path)
        path = ledger.child(e, "args_file", root, r"[^/]+")
        backup = ledger.child(e, "backup", root, BACKUP)
        if not backup.name.startswith(path.name + ".triage-backup-"):
            raise ledger.LedgerError(f"entry {entry_id}: {backup.name} is not a backup of {path.name}; refusing")
        for f, key in ((path, "args_id"), (backup, "backup_id")):
            ledger.no_symlinks(f)
            ledger.check_identity(f, ledger._identity_field(e, key), "file")
            ledger.plain_tree(f)
        if atomic.sha256(path) != e.get("after_sha256"):
            raise RuntimeError(f"{path} changed since the change was applied; refusing to overwrite it")
        fd = ledger.open_root(root, e["root_id"])
        try:
            atomic.restore_backup(fd, path, backup, e.get("before_sha256"))
        finally:
            os.close(fd)
    except ledger.LedgerError as exc:
        raise RuntimeError(str(exc)) from None
    took = restart_and_wait(Unit(restart, e["health_url"], float(e.get("timeout_s") or 180.0)))
    out = ledger.record_rollback(entry_id, root, store, restored=str(path), healthy=took is not None,
                                 restart_s=round(took, 2) if took is not None else None)
    return out


def undone(entry: dict, out: dict) -> str:
    state = "healthy again" if out.get("healthy") else f"NOT healthy at {entry.get('health_url')} yet"
    return f"restored {out['restored']} and restarted the server ({state})"
