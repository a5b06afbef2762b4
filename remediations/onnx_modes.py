"""Candidate models from an ONNX FP32 model: INT8 dynamic (after quant_pre_process), INT8 static with
calibration inputs, FP16 with float32 inputs and outputs. onnx and onnxruntime are imported here only."""
from __future__ import annotations

from pathlib import Path

import numpy as np

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
        raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
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
                raise ValueError("static quantization needs calibration inputs (--calib FILE or the capture's shapes)")
            quantize_static(str(pre), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        pre.unlink(missing_ok=True)


def input_spec(path: Path) -> tuple[str, list, str, int]:
    """(input name, shape with symbolic dims, numpy dtype name, vocabulary bound for integer inputs)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inp.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name
    vocab = 100
    for node in m.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits:
            vocab = int(inits[node.input[0]].dims[0])
            break
    return inp.name, dims, dtype, vocab


def random_feeds(spec: tuple[str, list, str, int], shapes: list[tuple[int, ...]], seed: int = 0) -> list[dict]:
    """Random valid inputs of the given shapes for a model whose ``input_spec`` is ``spec`` (read once by the
    caller: it parses the model file)."""
    name, dims, dtype, vocab = spec
    rng = np.random.default_rng(seed)
    feeds = []
    for shape in shapes:
        if np.issubdtype(np.dtype(dtype), np.integer):
            x = rng.integers(0, vocab, size=shape, dtype=np.dtype(dtype))
        else:
            x = rng.standard_normal(shape).astype(dtype)
        feeds.append({name: x})
    return feeds
