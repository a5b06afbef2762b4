"""PyTorch → ONNX re-export with dynamic batch and sequence axes, from a TorchScript file or a
``module:function`` factory returning an ``nn.Module``. torch is imported here only.

``torch.onnx.export`` can bake sizes seen while tracing into Reshape nodes even with ``dynamic_axes``;
the caller must run the export on several real shapes (remediations.verify.run_shapes) before trusting it.
"""
from __future__ import annotations

import importlib
from pathlib import Path


def load_module(source: str):
    import torch

    if ":" in source and not Path(source).exists():
        mod_name, fn = source.split(":", 1)
        module = getattr(importlib.import_module(mod_name), fn)()
    else:
        module = torch.jit.load(source, map_location="cpu")
    return module.eval()


def export(source: str, dst: Path, example_shape: tuple[int, int] = (2, 16), vocab: int = 2,
           input_name: str = "IDS", output_name: str = "LOGITS") -> None:
    import torch

    module = load_module(source)
    # token ids below `vocab` (default 2) are valid for any embedding table, whatever the model's vocabulary;
    # verification then draws ids from the exported graph's own table size
    example = torch.randint(0, vocab, example_shape, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(dst), input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch", 1: "sequence"}, output_name: {0: "batch"}},
                          opset_version=17, dynamo=False)


def torch_outputs(source: str, feeds: list[dict]):
    import torch

    module = load_module(source)
    with torch.no_grad():
        return [module(torch.from_numpy(next(iter(f.values())))).numpy() for f in feeds]
