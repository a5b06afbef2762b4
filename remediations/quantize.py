"""One-key model remediation: quantize (or re-export, then quantize) a model, verify it against the
guardrails, and only then install it as a new version beside the untouched original, with a ledger entry
that makes rollback exact.

plan()  → what will change, where, with which checks (nothing is written)
run()   → build the candidate in a scratch folder, verify it, and apply it when every guardrail holds
rollback(ledger_id) → remove exactly what was installed (after checking it is unchanged)
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from triage.analyzers.requests import input_mix

from . import atomic, ledger
from .onnx_modes import (MODES, Input, axes, bench_axes, input_spec, make_candidate, random_feeds, shape_of,
                         verification_axes)
from .base import RemediationError

KIND = "quantize"  # the ledger action of an installed model

EXPECTED = {"dynamic": "INT8 weights, activations quantized on the fly: ~4x smaller; MatMul-heavy models "
                       "run faster on CPU; small accuracy change",
            "static": "INT8 weights and activations (QDQ) calibrated on your inputs: fastest where kernels exist; "
                      "accuracy depends on calibration",
            "fp16": "half-size weights with float32 inputs/outputs: fast on GPUs, often slower on CPU; "
                    "tiny accuracy change"}
RISK = {"dynamic": 3, "static": 3, "fp16": 2}


@dataclass
class Plan:
    source: str                     # what the user named (ONNX file, Triton model dir, TorchScript, module:fn)
    mode: str
    original: str                   # the FP32 ONNX that is the baseline (exported first for PyTorch sources)
    target: str                     # what apply will create (never an existing path)
    triton_model_dir: str | None
    new_version: int | None
    calibration: str
    shapes: list[list[int]]          # the first input's verification shapes (from the model's own input spec)
    guardrails: dict
    threads: int
    what_changes: str
    expected_effect: str
    risk: int
    torch_source: bool = False
    input_sizes: list[int] | None = None   # the capture's input-size mix, for the dynamic non-batch axes
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def _triton_model_file(p: Path) -> Path | None:
    """The Triton model dir of a model file at ``<repo>/<model>/<version>/<file>`` (a config.pbtxt beside the
    version folders tells; without --repo that is the only sign)."""
    model_dir = p.parent.parent
    if re.fullmatch(r"\d+", p.parent.name) and (model_dir / "config.pbtxt").exists():
        return model_dir
    return None


def _in_repo(p: Path, repo: str) -> Path | None:
    """With --repo, MODEL must be a model folder ``<repo>/<model>`` or a model file ``<repo>/<model>/<N>/<file>``;
    returns the model dir (None for a non-ONNX source, decided later)."""
    root = Path(repo).resolve()
    if not root.is_dir():
        raise RemediationError(f"--repo {repo}: not a folder")
    try:
        rel = p.resolve().relative_to(root)
    except ValueError:
        raise RemediationError(f"{p} is outside --repo {repo}; with --repo, MODEL is a model name, a model "
                               "folder <repo>/<model>, or a model file <repo>/<model>/<version>/model.onnx "
                               "(or drop --repo)") from None
    if p.is_dir() and len(rel.parts) == 1:
        return p
    if p.is_file() and len(rel.parts) == 3 and re.fullmatch(r"\d+", rel.parts[1]):
        return p.parent.parent
    raise RemediationError(f"{p} is not a model of --repo {repo}: expected <repo>/<model> or "
                           "<repo>/<model>/<version>/<file>")


def resolve(source: str, repo: str | None) -> tuple[Path | None, Path | None, int | None, bool]:
    """(ONNX file or None for PyTorch, Triton model dir or None, its latest version, torch source?).
    A model file inside ``<repo>/<model>/<version>/`` is that Triton model: its new version is latest+1."""
    p = Path(source)
    if repo and not p.is_absolute() and (Path(repo) / source).exists():
        p = Path(repo) / source  # with --repo, a model name means the repository's model
    elif repo and not p.exists():
        raise RemediationError(f"{source}: no such model in --repo {repo} (nor a path)")
    model_dir = _in_repo(p, repo) if repo and p.suffix not in (".pt", ".pth", ".ts") else None
    if p.is_dir():
        versions = _versions(p)
        if not versions:
            raise RemediationError(f"{p}: no numeric version folders (expected a Triton model directory)")
        onnx_file = p / str(versions[-1]) / "model.onnx"
        if not onnx_file.exists():
            raise RemediationError(f"{onnx_file} not found (only ONNX models are quantized)")
        return onnx_file, p, versions[-1], False
    if p.suffix == ".onnx" and p.is_file():
        model_dir = model_dir or _triton_model_file(p)
        if model_dir is not None:
            return p, model_dir, _versions(model_dir)[-1], False
        return p, None, None, False
    if p.suffix in (".pt", ".pth", ".ts") and p.is_file() or (":" in source and not p.exists()):
        return None, None, None, True
    raise RemediationError(f"{source}: not an ONNX file, a Triton model directory, a TorchScript file or module:function")


def load_calibration(path: Path, spec: list[Input], batch: int = 8, limit: int = 64) -> list[dict]:
    """Feeds from an .npz: arrays named like the model's inputs are split into batches together; a
    single-input model takes every array as stacks of its input."""
    d = np.load(path)
    names = [i.name for i in spec]
    if set(names) <= set(d.files):
        groups = [{n: d[n] for n in names}]
    elif len(names) == 1:
        groups = [{names[0]: d[k]} for k in d.files]
    else:
        raise RemediationError(f"{path}: holds {', '.join(d.files) or 'no arrays'}; the model's inputs are "
                               f"{', '.join(names)} (one array per input)")
    feeds = []
    for g in groups:
        n = min(len(a) for a in g.values())
        for i in range(0, min(n, limit * batch), batch):
            feeds.append({k: a[i:i + batch] for k, a in g.items()})
    if not feeds:
        raise RemediationError(f"{path}: no arrays to calibrate with")
    return feeds


def sizes_from_capture(store, max_sizes: int = 6) -> list[int]:
    """The captured input-size mix (from size attributes such as gen_ai.usage.input_tokens); verification
    uses it on the model's dynamic non-batch axis, where it has one."""
    return [size for size, _ in input_mix(store, max_sizes)]


def plan(source: str, mode: str = "dynamic", repo: str | None = None, calib: str | None = None,
         guardrails: dict | None = None, threads: int = 1, sizes: list[int] | None = None) -> Plan:
    if mode not in MODES:
        raise RemediationError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    onnx_file, model_dir, version, is_torch = resolve(source, repo)
    notes = []
    if is_torch:
        src = Path(source) if Path(source).exists() else None
        target = (src.with_name(src.stem + f".{mode}.onnx") if src else Path.cwd() / f"{source.split(':')[-1]}.{mode}.onnx")
        original = "(exported from PyTorch first)"
        what = f"re-export {source} to ONNX (dynamic batch and sequence axes), then {mode}; new file {target}"
    elif model_dir is not None:
        target = model_dir / str(version + 1) / onnx_file.name  # the name Triton loads (default_model_filename)
        original = str(onnx_file)
        what = (f"new version {version + 1} of model '{model_dir.name}' ({mode}) beside version {version}, which stays "
                f"untouched; Triton serves the highest version by default")
    else:
        target = onnx_file.with_name(onnx_file.stem + f".{mode}.onnx")
        original = str(onnx_file)
        what = f"new file {target} ({mode}) next to {onnx_file}, which stays untouched"
    if Path(target).exists():
        raise RemediationError(f"{target} already exists; triage never overwrites (roll back or remove it first)")
    shapes: list[list[int]] = []
    if onnx_file is not None:
        spec = input_spec(onnx_file)
        shapes = [shape_of(spec[0], a) for a in verification_axes(spec, sizes)]
        if sizes and not axes(spec)[1]:
            notes.append("the capture's input sizes map onto no dynamic axis of this model (fixed shape "
                         f"{spec[0].dims}); verifying on its batch axis only")
    if mode == "static" and not calib and not sizes:
        notes.append("no --calib file: calibrating on random inputs of the verification shapes; pass real inputs")
    return Plan(source=source, mode=mode, original=original, target=str(target),
                triton_model_dir=str(model_dir) if model_dir else None,
                new_version=version + 1 if model_dir is not None else None,
                calibration=calib or ("random inputs of the captured input-size mix" if sizes
                                      else "random inputs of the verification shapes"),
                shapes=shapes, input_sizes=list(sizes) if sizes else None,
                guardrails=dict(guardrails or {"min_top1_agreement": 0.99}), threads=threads, what_changes=what,
                expected_effect=EXPECTED[mode], risk=RISK[mode], torch_source=is_torch, notes=notes)


Progress = Callable[[str], None]


def run(p: Plan, apply: bool = True, store=None, progress: Progress | None = None, iters: int = 200) -> dict:
    """Build, verify and (when every guardrail holds and ``apply``) install the candidate."""
    from .verify import run_shapes, session, verify

    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="triage-quantize-") as tmp:
        tmp = Path(tmp)
        original = Path(p.original)
        if p.torch_source:
            from .export import export, torch_outputs

            say("exporting PyTorch to ONNX")
            original = tmp / "exported.onnx"
            export(p.source, original)
            spec = input_spec(original)
            points = verification_axes(spec, p.input_sizes)
            p.shapes = [shape_of(spec[0], a) for a in points]
            feeds = random_feeds(spec, points)
            sess = session(original, p.threads)  # one session of the export, for its shapes and its outputs
            failures = run_shapes(original, feeds, p.threads, sess=sess)
            if failures:
                return {"plan": p.to_dict(), "applied": False, "reason": "the export baked a shape",
                        "verification": {"ok": False, "shape_failures": failures}}
            ref = torch_outputs(p.source, feeds)
            diff = max(float(np.max(np.abs(sess.run(None, f)[0] - r))) for f, r in zip(feeds, ref))
            if diff > 1e-3:
                return {"plan": p.to_dict(), "applied": False, "reason": f"export differs from PyTorch by {diff:.2e}",
                        "verification": {"ok": False}}
        spec = input_spec(original)
        points = verification_axes(spec, p.input_sizes)
        p.shapes = [shape_of(spec[0], a) for a in points]
        shape_feeds = random_feeds(spec, points, seed=1)
        calib = (load_calibration(Path(p.calibration), spec) if Path(p.calibration).suffix == ".npz"
                 else random_feeds(spec, points * 8, seed=2))
        candidate = tmp / "candidate.onnx"
        say(f"building the {p.mode} candidate")
        make_candidate(original, candidate, p.mode, calibration=calib)
        say("verifying shapes, agreement and speed")
        bench = random_feeds(spec, [bench_axes(spec)], seed=3)[0]
        verdict = verify(original, candidate, shape_feeds, calib, bench, p.guardrails, p.threads, iters)
        result = {"plan": p.to_dict(), "verification": verdict.to_dict(), "applied": False}
        if not verdict.ok:
            result["reason"] = "; ".join(verdict.guardrail_failures)
            return result
        if not apply:
            result["reason"] = "preview only"
            return result
        say("installing")
        entry = _install(p, original, candidate, verdict, store)
        result.update(applied=True, ledger_id=entry["id"], installed=entry["created"])
        return result


def _install(p: Plan, original: Path, candidate: Path, verdict, store) -> dict:
    target = Path(p.target)
    # every path in the ledger is absolute and resolved, so rollback acts on this folder from anywhere
    root = (Path(p.triton_model_dir) if p.triton_model_dir else target.parent).resolve(strict=True)
    if p.triton_model_dir:
        created = root / target.parent.name
        staging = root / f".triage-staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            shutil.copyfile(candidate, staging / target.name)
            atomic.install_dir_atomic(staging, created)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        created = root / target.name
        atomic.copy_file_atomic(candidate, created)
    entry = ledger.rooted_entry(
        KIND, root, mode=p.mode, source=p.source,
        original={"path": str(original.resolve()) if not p.torch_source else p.source,
                  "sha256": atomic.sha256(original) if original.exists() else None},
        created=str(created), created_kind="dir" if p.triton_model_dir else "file",
        created_id=ledger.identity(created), created_digest=atomic.tree_digest(created),
        before=vars(verdict.before), after=vars(verdict.after),
        agreement={"top1": verdict.top1_agreement, "max_abs_diff": verdict.max_abs_diff}, guardrails=p.guardrails,
        rollback="remove the created path (after checking its identity and digest)")
    ledger.record(entry, root, store)
    return entry


CREATED = {"dir": r"\d+", "file": r"[^/]+\.(dynamic|static|fp16)\.onnx"}  # what _install names what it creates


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    """Remove what ``entry_id`` installed, only after ``ledger.guard`` and only if it is, by device, inode and
    digest, exactly what was installed, inside the root the entry was made for."""
    e = ledger.find(entry_id, ledger_path)
    if e is None:
        raise RemediationError(f"no ledger entry {entry_id!r} in {ledger_path or ledger.global_ledger()}")
    try:
        root = ledger.guard(e, ledger_path)
        kind = e.get("created_kind")
        if kind not in CREATED:
            raise ledger.LedgerError(f"entry {entry_id}: created_kind {kind!r} is not 'dir' or 'file'")
        created = ledger.child(e, "created", root, CREATED[kind])
        if not os.path.lexists(created):
            raise RemediationError(f"{created} is gone already; nothing to roll back")
        ledger.no_symlinks(created)
        ledger.check_identity(created, ledger._identity_field(e, "created_id"), "installed " + kind)
        ledger.plain_tree(created)
        if atomic.tree_digest(created) != e.get("created_digest"):
            raise RemediationError(f"{created} changed since it was installed; refusing to delete it")
        fd = ledger.open_root(root, e["root_id"])
        try:
            st = os.stat(created.name, dir_fd=fd, follow_symlinks=False)
            if {"dev": st.st_dev, "ino": st.st_ino} != e["created_id"]:
                raise ledger.LedgerError(f"{created} changed while rolling back; refusing")
            if kind == "dir":
                shutil.rmtree(created.name, dir_fd=fd)
            else:
                os.unlink(created.name, dir_fd=fd)
        finally:
            os.close(fd)
    except ledger.LedgerError as exc:
        raise RemediationError(str(exc)) from None
    return ledger.record_rollback(entry_id, root, store, removed=str(created))


def undone(entry: dict, out: dict) -> str:
    return f"removed {out['removed']}"
