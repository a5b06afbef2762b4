"""The core (collectors, analyzers, remediations) never imports the UI; heavy libraries stay lazy."""
import subprocess
import sys

from conftest import ROOT

CHECK = """
import sys, importlib
for m in {mods!r}:
    importlib.import_module(m)
bad = sorted(k for k in sys.modules if k.split('.')[0] in {forbidden!r})
print(','.join(bad))
"""


def _loaded(mods, forbidden):
    out = subprocess.run([sys.executable, "-c", CHECK.format(mods=mods, forbidden=forbidden)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_core_never_imports_textual_or_tui():
    core = ["collectors.ingest", "collectors.store", "analyzers.session", "analyzers.engine", "analyzers.report",
            "analyzers.rules", "remediations"]
    assert _loaded(core, {"textual", "tui", "textual_plotext"}) == []


def test_layers_point_one_way():
    assert _loaded(["collectors.ingest", "collectors.store"], {"analyzers", "remediations", "tui"}) == []
    assert _loaded(["analyzers.session", "analyzers.rules"], {"remediations", "tui"}) == []


def test_help_imports_neither_torch_nor_onnxruntime():
    code = ("import sys\nfrom tui.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED:' + ','.join(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'onnxruntime', 'onnx', 'textual'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "usage: triage" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED:"
