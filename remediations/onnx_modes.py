"""Candidate models from an ONNX FP32 model: INT8 dynamic (after quant_pre_process), INT8 static with
calibration inputs, FP16 with float32 inputs and outputs. onnx and onnxruntime are imported here only."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from triage.errors import UsageError

MODES = ("dynamic", "static", "fp16")


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - API completeness
        pass


def make_candidate(src: Path, dst: Path, mode: str, calibration: list[dict] | None = None) -> None:
    """Write the candidate for ``mode`` to ``dst`` (a new file; ``src`` is only read)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
        return
    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    except Exception:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    try:
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
        else:
            if not calibration:
                raise UsageError("static quantization needs calibration inputs (--calib FILE or the capture's shapes)")
            quantize_static(str(pre), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        pre.unlink(missing_ok=True)


class Input(NamedTuple):
    name: str
    dims: list          # an int for a fixed dimension, a name (or "?") for a dynamic one
    dtype: str          # numpy dtype name
    high: int | None    # integer inputs: values are drawn from [0, high) (an embedding's rows; 2 for masks)


def _dynamic(d) -> bool:
    return not isinstance(d, int) or d <= 0


def input_spec(path: Path) -> list[Input]:
    """Every graph input the caller must feed, in order, with its shape (symbolic dims kept) and dtype.
    An integer input that indexes an embedding (a Gather on an initializer, directly or through a Cast)
    gets that table's row count as its bound, so random token ids are always in range."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in m.graph.initializer}
    casts = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Cast"}
    rows: dict[str, int] = {}
    for node in m.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits and len(node.input) > 1:
            idx = casts.get(node.input[1], node.input[1])
            rows.setdefault(idx, int(inits[node.input[0]].dims[0]))
    out = []
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        high = None
        if np.issubdtype(np.dtype(dtype), np.integer):
            high = rows.get(inp.name) or (256 if dtype == "uint8" else 2)
        out.append(Input(inp.name, dims, dtype, high))
    return out


BATCH_SIZES = (1, 4, 16, 3, 1)           # the first axis, when it is dynamic
LENGTHS = (8, 32, 128, 57, 1)            # every other dynamic axis (sequence length, image side, ...)


def axes(spec: list[Input]) -> tuple[list, list]:
    """(dynamic batch-axis names, other dynamic axis names) over all inputs: a name shared by inputs (say
    ``batch`` and ``sequence`` of ids and mask) is one axis; an unnamed dynamic axis is named by position."""
    batch, other = [], []
    for inp in spec:
        for i, d in enumerate(inp.dims):
            if _dynamic(d):
                key = d if isinstance(d, str) and d != "?" else f"?{i}"
                target = batch if i == 0 else other
                if key not in batch and key not in other:
                    target.append(key)
    return batch, other


def verification_axes(spec: list[Input], sizes: list[int] | None = None) -> list[dict]:
    """Values for the dynamic axes to verify on: fixed dimensions are kept as the model declares them, only
    dynamic ones vary (batch 1, 4, 16, 3, 1; other axes 8, 32, 128, 57, 1). ``sizes`` (the capture's
    input-size mix) replace the lengths of the other dynamic axes, at batch 1, where the model has any."""
    batch, other = axes(spec)
    if sizes and other:
        plan = [(1, s) for s in sizes]
    else:
        plan = list(zip(BATCH_SIZES, LENGTHS))
    out = []
    for b, n in plan:
        a = {**{k: b for k in batch}, **{k: n for k in other}}
        if a not in out:
            out.append(a)
    return out


def bench_axes(spec: list[Input]) -> dict:
    """The measurement point: batch 8, length 64 on the dynamic axes."""
    batch, other = axes(spec)
    return {**{k: 8 for k in batch}, **{k: 64 for k in other}}


def shape_of(inp: Input, values: dict) -> list[int]:
    return [values[d if isinstance(d, str) and d != "?" else f"?{i}"] if _dynamic(d) else d
            for i, d in enumerate(inp.dims)]


def random_feeds(spec: list[Input], axis_values: list[dict], seed: int = 0) -> list[dict]:
    """Random valid inputs for a model whose ``input_spec`` is ``spec`` (read once by the caller: it parses
    the model file), one feed per entry of ``axis_values``: floats from a normal distribution, integers
    within each input's bound (token ids within the embedding, 0/1 for masks, 0..255 for uint8 images),
    booleans at random."""
    rng = np.random.default_rng(seed)
    feeds = []
    for values in axis_values:
        feed = {}
        for inp in spec:
            shape = shape_of(inp, values)
            dt = np.dtype(inp.dtype)
            if dt == np.bool_:
                x = rng.integers(0, 2, size=shape).astype(bool)
            elif np.issubdtype(dt, np.integer):
                x = rng.integers(0, inp.high, size=shape, dtype=dt)
            else:
                x = rng.standard_normal(shape).astype(dt)
            feed[inp.name] = x
        feeds.append(feed)
    return feeds
