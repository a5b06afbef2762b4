"""The demo model: a small text classifier (embedding → per-token feed-forward → mean pool → classifier),
trained for a few seconds on a synthetic task so its decisions are stable, exported to ONNX into a
Triton-style model repository. ``python -m triage.lab.model OUT_DIR``.

``BakedShapeClassifier`` is the same model written with a size fixed at trace time (``view(-1, 16, D)``):
its ONNX export only runs at sequence length 16, which verification must catch.
"""
from __future__ import annotations

import sys
from pathlib import Path

VOCAB, DIM, HIDDEN, CLASSES = 2000, 128, 512, 4


def _classes():
    import torch
    from torch import nn

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(VOCAB, DIM)
            self.ff = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, DIM), nn.ReLU())
            self.head = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))

        def forward(self, ids):
            x = self.emb(ids)
            x = x + self.ff(x)
            return self.head(x.mean(dim=1))

    class BakedShapeClassifier(TextClassifier):
        def forward(self, ids):
            x = self.emb(ids).view(-1, 16, DIM)  # 16 is baked into the graph when traced
            x = x + self.ff(x)
            return self.head(x.mean(dim=1))

    return torch, TextClassifier, BakedShapeClassifier


def _task(torch, n, seq):
    """Label = which quarter of the vocabulary most tokens come from: learnable, with clear margins."""
    labels = torch.randint(0, CLASSES, (n,))
    lo = labels * (VOCAB // CLASSES)
    ids = lo[:, None] + torch.randint(0, VOCAB // CLASSES, (n, seq))
    noise = torch.rand(n, seq) < 0.3
    ids = torch.where(noise, torch.randint(0, VOCAB, (n, seq)), ids)
    return ids, labels


def train(seed: int = 0, steps: int = 150):
    torch, TextClassifier, _ = _classes()
    torch.manual_seed(seed)
    m = TextClassifier()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(steps):
        ids, y = _task(torch, 64, 32)
        loss = torch.nn.functional.cross_entropy(m(ids), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def classifier():
    """Factory for ``triage quantize demo:...``-style re-export tests (module:function)."""
    return train()


def baked_classifier():
    torch, _, Baked = _classes()
    m = Baked()
    m.load_state_dict(train().state_dict())
    return m.eval()


def write_repo(out: Path, model_name: str = "clf") -> Path:
    """A Triton-style repository: OUT/clf/config.pbtxt and OUT/clf/1/model.onnx; returns the model file."""
    import numpy as np
    import torch

    from triage.remediations.export import export

    out = Path(out)
    vdir = out / model_name / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    ts = out / "classifier.pt"
    torch.jit.script(train()).save(str(ts))
    export(str(ts), vdir / "model.onnx", vocab=VOCAB)
    (out / model_name / "config.pbtxt").write_text(
        f'name: "{model_name}"\nbackend: "onnxruntime"\nmax_batch_size: 16\n'
        'input [ { name: "IDS" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
        f'output [ {{ name: "LOGITS" data_type: TYPE_FP32 dims: [ {CLASSES} ] }} ]\n'
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n")
    ids, _ = _task(torch, 256, 32)
    np.savez(out / "calib.npz", IDS=ids.numpy())
    return vdir / "model.onnx"


if __name__ == "__main__":
    print(write_repo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-model-repo")))
