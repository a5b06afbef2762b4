"""Small non-text ONNX models for the quantize and ledger tests (helper ``ledger``): a tabular MLP with a
float input ``[batch, 32]`` and a CNN on fixed 3x32x32 images, both with a dynamic batch axis only, each in
a Triton-style folder ``<out>/<name>/1/model.onnx`` (no config.pbtxt: Triton auto-completes ONNX configs)."""
from __future__ import annotations

from pathlib import Path

import pytest


def write_models(out: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    out = Path(out)
    mlp = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 4))  # 32x32 only
    for name, module, example in (("mlp", mlp, torch.randn(2, 32)), ("cnn", cnn, torch.randn(2, 3, 32, 32))):
        vdir = out / name / "1"
        vdir.mkdir(parents=True)
        with torch.no_grad():
            torch.onnx.export(module.eval(), (example,), str(vdir / "model.onnx"), input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              opset_version=17, dynamo=False)
    return out


@pytest.fixture(scope="module")
def models_master(tmp_path_factory):
    """The three test models, written once per module that imports this fixture."""
    return write_models(tmp_path_factory.mktemp("models"))
