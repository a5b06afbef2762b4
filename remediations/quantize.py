"""One-key model remediation: quantize (or re-export, then quantize) a model, verify it against the
guardrails, and only then install it as a new version beside the untouched original, with a ledger entry
that makes rollback exact.

plan()  → what will change, where, with which checks (nothing is written)
run()   → build the candidate in a scratch folder, verify it, and apply it when every guardrail holds
rollback(ledger_id) → remove exactly what was installed (after checking it is unchanged)
"""
from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import atomic, ledger
from .onnx_modes import MODES, input_spec, make_candidate, random_feeds

DEFAULT_SHAPES = [(1, 8), (4, 32), (16, 128), (3, 57), (1, 1)]
BENCH_SHAPE = (8, 64)
EXPECTED = {"dynamic": "INT8 weights, activations quantized on the fly: ~4x smaller; MatMul-heavy models "
                       "run faster on CPU; small accuracy change",
            "static": "INT8 weights and activations (QDQ) calibrated on your inputs: fastest where kernels exist; "
                      "accuracy depends on calibration",
            "fp16": "half-size weights with float32 inputs/outputs: fast on GPUs, often slower on CPU; "
                    "tiny accuracy change"}
RISK = {"dynamic": 3, "static": 3, "fp16": 2}


class RemediationError(RuntimeError):
    pass


@dataclass
class Plan:
    source: str                     # what the user named (ONNX file, Triton model dir, TorchScript, module:fn)
    mode: str
    original: str                   # the FP32 ONNX that is the baseline (exported first for PyTorch sources)
    target: str                     # what apply will create (never an existing path)
    triton_model_dir: str | None
    new_version: int | None
    calibration: str
    shapes: list[list[int]]
    guardrails: dict
    threads: int
    what_changes: str
    expected_effect: str
    risk: int
    torch_source: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def resolve(source: str, repo: str | None) -> tuple[Path | None, Path | None, int | None, bool]:
    """(ONNX file or None for PyTorch, Triton model dir or None, its latest version, torch source?)."""
    p = Path(source)
    if repo and not p.exists():
        p = Path(repo) / source
    if p.is_dir():
        versions = _versions(p)
        if not versions:
            raise RemediationError(f"{p}: no numeric version folders (expected a Triton model directory)")
        onnx_file = p / str(versions[-1]) / "model.onnx"
        if not onnx_file.exists():
            raise RemediationError(f"{onnx_file} not found (only ONNX models are quantized)")
        return onnx_file, p, versions[-1], False
    if p.suffix == ".onnx" and p.is_file():
        model_dir = p.parent.parent
        if re.fullmatch(r"\d+", p.parent.name) and (model_dir / "config.pbtxt").exists():
            return p, model_dir, _versions(model_dir)[-1], False
        return p, None, None, False
    if p.suffix in (".pt", ".pth", ".ts") and p.is_file() or (":" in source and not p.exists()):
        return None, None, None, True
    raise RemediationError(f"{source}: not an ONNX file, a Triton model directory, a TorchScript file or module:function")


def load_calibration(path: Path, input_name: str, batch: int = 8, limit: int = 64) -> list[dict]:
    """Feeds from an .npz: each array is a stack of inputs (split into batches)."""
    d = np.load(path)
    feeds = []
    for key in d.files:
        arr = d[key]
        for i in range(0, min(len(arr), limit * batch), batch):
            feeds.append({input_name: arr[i:i + batch]})
    if not feeds:
        raise RemediationError(f"{path}: no arrays to calibrate with")
    return feeds


def shapes_from_capture(store, max_shapes: int = 6) -> list[tuple[int, int]]:
    """The captured input-size mix (from size attributes such as gen_ai.usage.input_tokens) as (1, size) shapes."""
    from .loadgen import mix_from_store

    return [(1, size) for size, _ in mix_from_store(store, max_shapes)]


def plan(source: str, mode: str = "dynamic", repo: str | None = None, calib: str | None = None,
         guardrails: dict | None = None, threads: int = 1, shapes: list[tuple[int, ...]] | None = None) -> Plan:
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
        target = model_dir / str(version + 1) / "model.onnx"
        original = str(onnx_file)
        what = (f"new version {version + 1} of model '{model_dir.name}' ({mode}) beside version {version}, which stays "
                f"untouched; Triton serves the highest version by default")
    else:
        target = onnx_file.with_name(onnx_file.stem + f".{mode}.onnx")
        original = str(onnx_file)
        what = f"new file {target} ({mode}) next to {onnx_file}, which stays untouched"
    if Path(target).exists():
        raise RemediationError(f"{target} already exists; triage never overwrites (roll back or remove it first)")
    if mode == "static" and not calib and not shapes:
        notes.append("no --calib file: calibrating on random inputs of the default shapes; pass real inputs")
    return Plan(source=source, mode=mode, original=original, target=str(target),
                triton_model_dir=str(model_dir) if model_dir else None,
                new_version=version + 1 if model_dir is not None else None,
                calibration=calib or ("captured input-shape mix" if shapes else "random inputs of default shapes"),
                shapes=[list(s) for s in (shapes or DEFAULT_SHAPES)],
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
            feeds = random_feeds(input_spec(original), [tuple(s) for s in p.shapes])
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
        shape_feeds = random_feeds(spec, [tuple(s) for s in p.shapes], seed=1)
        calib = (load_calibration(Path(p.calibration), spec[0]) if Path(p.calibration).suffix == ".npz"
                 else random_feeds(spec, [tuple(s) for s in p.shapes] * 8, seed=2))
        candidate = tmp / "candidate.onnx"
        say(f"building the {p.mode} candidate")
        make_candidate(original, candidate, p.mode, calibration=calib)
        say("verifying shapes, agreement and speed")
        bench = random_feeds(spec, [BENCH_SHAPE], seed=3)[0]
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
    beside = Path(p.triton_model_dir) if p.triton_model_dir else target.parent
    if p.triton_model_dir:
        staging = beside / f".triage-staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            shutil.copyfile(candidate, staging / "model.onnx")
            atomic.install_dir_atomic(staging, target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        created = str(target.parent)
    else:
        atomic.copy_file_atomic(candidate, target)
        created = str(target)
    entry = ledger.new_entry(
        "quantize", mode=p.mode, source=p.source,
        original={"path": p.original, "sha256": atomic.sha256(original) if original.exists() else None},
        created=created, created_digest=atomic.tree_digest(Path(created)),
        before=vars(verdict.before), after=vars(verdict.after),
        agreement={"top1": verdict.top1_agreement, "max_abs_diff": verdict.max_abs_diff}, guardrails=p.guardrails,
        rollback="remove the created path (after checking its digest)")
    ledger.record(entry, beside, store)
    return entry


def rollback(entry_id: str, ledger_path: Path | None = None, store=None) -> dict:
    e = ledger.find(entry_id, ledger_path)
    if e is None:
        raise RemediationError(f"no ledger entry {entry_id!r} in {ledger_path or ledger.global_ledger()}")
    if ledger.rolled_back(entry_id, ledger_path):
        raise RemediationError(f"{entry_id} was already rolled back")
    created = Path(e["created"])
    if not created.exists():
        raise RemediationError(f"{created} is gone already; nothing to roll back")
    if atomic.tree_digest(created) != e["created_digest"]:
        raise RemediationError(f"{created} changed since it was installed; refusing to delete it")
    if created.is_dir():
        shutil.rmtree(created)
    else:
        created.unlink()
    beside = created.parent
    out = ledger.new_entry("rollback", of=entry_id, removed=str(created))
    ledger.record(out, beside, store)
    return out
