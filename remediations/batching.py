"""Dynamic batching remediation for Triton: read the model config (config.pbtxt with Triton's ModelConfig
protobuf, or the live ``GET /v2/models/<m>/config``), propose ``max_queue_delay_microseconds``,
``preferred_batch_size``, ``max_batch_size`` and the instance count from measured arrival rate, batch size
and compute time per batch within the latency budget, show the arithmetic and a diff, apply atomically
with a backup (and the repository load API under explicit model control), record it, roll it back exactly.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from triage.collectors import triton_model_config as model_config

from . import atomic, ledger

KIND = "batching"  # the ledger action of a Triton batching change


@dataclass
class Measured:
    arrival_rps: float
    avg_batch: float
    compute_ms: float            # per execution (one batch)
    queue_budget_ms: float | None = None


@dataclass
class Proposal:
    model: str
    config_path: str
    old_text: str
    new_text: str
    changes: dict
    arithmetic: list[str] = field(default_factory=list)

    @property
    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.old_text.splitlines(True), self.new_text.splitlines(True),
                                            "config.pbtxt (now)", "config.pbtxt (proposed)"))

    def to_dict(self) -> dict:
        return {"model": self.model, "config_path": self.config_path, "changes": self.changes,
                "arithmetic": self.arithmetic, "diff": self.diff}


def decide(max_batch_size: int, window_us: int, instances: int, m: Measured) -> tuple[int, int, int, list[str]]:
    """The arithmetic, server-independent: (new window µs, preferred batch, instances, explanation lines)."""
    lam, comp_s = max(m.arrival_rps, 1e-9), max(m.compute_ms, 1e-3) / 1000.0
    arrivals_in_window = lam * window_us / 1e6
    arrivals_per_exec = lam * comp_s
    best = max(1, min(max_batch_size or 1, round(arrivals_per_exec) + 1))
    lines = [f"arrival rate λ = {lam:.2f} req/s; compute per batch = {m.compute_ms:.2f} ms; "
             f"measured average batch = {m.avg_batch:.2f}",
             f"requests arriving during the current {window_us / 1000:.1f} ms window: λ·W = {arrivals_in_window:.2f}",
             f"requests arriving during one execution: λ·compute = {arrivals_per_exec:.2f} → useful batch ≈ {best}"]
    if best <= 1:
        new_window = 0
        lines.append("a batch of ~1 is all the traffic can form: waiting buys nothing → window 0 µs "
                     "(requests that queue during an execution are still batched)")
    else:
        wait_s = (best - 1) / lam
        new_window = int(min(wait_s, comp_s) * 1e6)
        lines.append(f"to gather {best} requests takes (b−1)/λ = {wait_s * 1000:.1f} ms; capped at one compute time → "
                     f"{new_window} µs")
    if m.queue_budget_ms is not None and new_window / 1000 > m.queue_budget_ms:
        new_window = int(m.queue_budget_ms * 1000)
        lines.append(f"capped by the queue budget ({m.queue_budget_ms:.1f} ms) → {new_window} µs")
    utilization = arrivals_per_exec / max(best, 1) / instances
    new_instances = instances + 1 if utilization > 0.7 else instances
    lines.append(f"utilization per instance ≈ λ·compute/(batch·instances) = {utilization:.2f} → "
                 f"{'add an instance' if new_instances > instances else 'keep'} ({new_instances})")
    return new_window, best, new_instances, lines


def propose(config_path: Path, m: Measured) -> Proposal:
    """A Triton config.pbtxt change (rendered with text_format; comments are lost, hence the diff)."""
    config_path = Path(config_path)
    old_text = config_path.read_text()
    cfg = model_config.parse(old_text, str(config_path))
    new = model_config.parse(old_text, str(config_path))
    window_us = cfg.dynamic_batching.max_queue_delay_microseconds
    instances = model_config.instances(cfg)
    new_window, best, new_instances, lines = decide(cfg.max_batch_size, window_us, instances, m)
    new.dynamic_batching.max_queue_delay_microseconds = new_window
    del new.dynamic_batching.preferred_batch_size[:]
    if best > 1:
        new.dynamic_batching.preferred_batch_size.append(best)
    if new_instances != instances and new.instance_group:
        new.instance_group[0].count = new_instances - sum(g.count or 1 for g in new.instance_group[1:])
    changes = {"max_queue_delay_microseconds": [window_us, new_window],
               "preferred_batch_size": [list(cfg.dynamic_batching.preferred_batch_size),
                                        list(new.dynamic_batching.preferred_batch_size)],
               "max_batch_size": [cfg.max_batch_size, new.max_batch_size], "instances": [instances, new_instances]}
    return Proposal(cfg.name or config_path.parent.name, str(config_path), old_text, model_config.render(new), changes,
                    lines)


BACKUP = r"config\.pbtxt\.triage-backup-[0-9a-f]{8}"  # the only names apply() gives a backup


def apply(p: Proposal, reload=None, store=None, before: dict | None = None) -> dict:
    """Write the new config atomically beside a byte-exact backup, reload the model, record it (absolute
    paths, with the identity of the config and the backup, so rollback restores exactly these files)."""
    path = Path(p.config_path).resolve(strict=True)
    backup = atomic.replace_with_backup(path, p.old_text, p.new_text)
    entry = ledger.rooted_entry(KIND, path.parent, model=p.model, config=str(path), backup=str(backup),
                                config_id=ledger.identity(path), backup_id=ledger.identity(backup),
                                before_sha256=atomic.sha256(backup), after_sha256=atomic.sha256(path),
                                changes=p.changes, arithmetic=p.arithmetic, measured_before=before or {},
                                rollback="restore the backup over the config, reload the model")
    ledger.record(entry, path.parent, store)
    if reload:
        reload()
    return entry


def rollback(entry_id: str, reload=None, ledger_path: Path | None = None, store=None) -> dict:
    """Restore the backup over the config, only after ``ledger.guard`` and only when both are, by device,
    inode and digest, the files ``apply`` left: ``config.pbtxt`` and its backup in the entry's root."""
    e = ledger.find(entry_id, ledger_path)
    if e is None or e.get("action") != KIND:
        raise RuntimeError(f"no batching change {entry_id!r} in the ledger")
    try:
        root = ledger.guard(e, ledger_path)
        path = ledger.child(e, "config", root, r"config\.pbtxt")
        backup = ledger.child(e, "backup", root, BACKUP)
        for f, key in ((path, "config_id"), (backup, "backup_id")):
            ledger.no_symlinks(f)
            ledger.check_identity(f, ledger._identity_field(e, key), "file")
            ledger.plain_tree(f)
        if atomic.sha256(path) != e.get("after_sha256"):
            raise RuntimeError(f"{path} changed since the change was applied; refusing to overwrite it")
        fd = ledger.open_root(root, e["root_id"])  # from here on, names relative to the checked folder
        try:
            for name, key in ((path.name, "config_id"), (backup.name, "backup_id")):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if {"dev": st.st_dev, "ino": st.st_ino} != e[key]:
                    raise ledger.LedgerError(f"{root / name} changed while rolling back; refusing")
            atomic.restore_backup(fd, path, backup, e.get("before_sha256"))
        finally:
            os.close(fd)
    except ledger.LedgerError as exc:
        raise RuntimeError(str(exc)) from None
    out = ledger.record_rollback(entry_id, root, store, restored=str(path))
    if reload:
        reload()
    return out


def undone(entry: dict, out: dict) -> str:
    # a running server reloads its model on its own (poll) or on the next load call; say so
    return f"restored {out['restored']} (reload the model if the server does not poll)"
