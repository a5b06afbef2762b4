"""The core (collectors, analyzers, remediations) never imports the UI; layers point one way
(tui -> remediations -> analyzers -> collectors); heavy libraries (torch, onnx, onnxruntime) stay lazy.

Checked twice: by importing every module of a layer in a fresh interpreter (what a module pulls in when it is
loaded), and by reading every import statement of every file, those inside functions included (what it pulls in
when called)."""
import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

LAYERS = ("collectors", "analyzers", "remediations", "tui")  # each may import only the ones before it
UI = ("textual", "textual_plotext", "tui")
HEAVY = ("torch", "onnx", "onnxruntime")

IMPORT_ALL = """
import importlib, json, pkgutil, sys
imported = []
for name in {pkgs!r}:
    pkg = importlib.import_module(name)
    imported.append(name)
    for m in pkgutil.walk_packages(pkg.__path__, name + "."):
        importlib.import_module(m.name)
        imported.append(m.name)
print(json.dumps({{"imported": imported, "loaded": sorted({{k.split(".")[0] for k in sys.modules}})}}))
"""


def _modules_on_disk(pkg: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / pkg).rglob("*.py"))


def _import_all(pkgs) -> tuple[list[str], set[str]]:
    """Every module of ``pkgs``, imported in a fresh interpreter: (modules imported, top-level packages loaded)."""
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL.format(pkgs=list(pkgs))], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["imported"], set(got["loaded"])


def test_core_never_imports_textual_tui_or_heavy_libraries():
    core = LAYERS[:3]
    imported, loaded = _import_all(core)
    assert sorted(imported) == sorted(m for pkg in core for m in _modules_on_disk(pkg))  # every module, really
    assert "triage.remediations.quantize" in imported and "triage.analyzers.rules.retry_spiral" in imported
    assert loaded & set(UI + HEAVY) == set()


@pytest.mark.parametrize("layer", LAYERS[:3])
def test_loading_a_layer_loads_no_layer_above_it(layer):
    imported, loaded = _import_all([layer])
    assert len(imported) == len(_modules_on_disk(layer)) > 1
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    assert loaded & above == set()


def _imports(path):
    """(line, absolute module name, inside a function) of every import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue  # relative imports stay inside their own package
        for name in names:
            yield node.lineno, name, id(node) in in_function


def _violations(check) -> list[str]:
    bad = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            for line, name, lazy in _imports(path):
                why = check(layer, name.split(".")[0], lazy)
                if why:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}: {why}")
    return bad


def test_no_import_statement_points_up_a_layer_even_inside_functions():
    def check(layer, top, lazy):
        if top in LAYERS and LAYERS.index(top) > LAYERS.index(layer):
            return f"{layer} must not depend on {top}"
        if top in UI and layer != "tui":
            return "the core never imports the UI"

    assert _violations(check) == []


def test_heavy_libraries_are_imported_only_inside_functions():
    assert _violations(lambda layer, top, lazy: top in HEAVY and not lazy and "import at module level") == []


def test_the_static_check_sees_function_local_imports(tmp_path):
    """The checker itself: a function-local import is found and marked as such."""
    p = tmp_path / "m.py"
    p.write_text("import os\n\ndef f():\n    from tui.app import TriageApp\n    import torch\n")
    assert list(_imports(p)) == [(1, "os", False), (4, "triage.tui.app", True), (5, "torch", True)]


def test_help_imports_neither_torch_nor_onnxruntime():
    code = ("import sys\nfrom triage.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED:' + ','.join(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'onnxruntime', 'onnx', 'textual'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "usage: triage" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED:"
