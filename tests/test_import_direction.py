"""Layers point one way, the core never imports the UI, heavy libraries stay lazy.

Layers, lowest first (docs/architecture.md): the base modules (``triage.lifecycle``, ``triage.sample_traces``)
-> collectors -> analyzers -> remediations -> sessions -> tui | lab -> cli. A module may import its own layer
and the ones below; ``tui`` and ``lab`` are siblings that never import each other.

Checked twice: by importing every module of a layer in a fresh interpreter (what a module pulls in when it is
loaded), and by reading every import statement of every file, those inside functions included (what it pulls in
when called). tests/test_layout.py checks the same order with import-linter on the installed package, and that
there are no import circles at all."""
import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

# (folder in the checkout, subpackage of triage); index = layer, a layer may hold siblings.
LAYERS = (("lifecycle", "sample_traces"), ("collectors",), ("analyzers",), ("remediations",), ("sessions",),
          ("tui", "lab"), ("cli",))
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
CORE = ("collectors", "analyzers", "remediations", "sessions")
UI = ("textual", "textual_plotext")
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
loaded = {{".".join(k.split(".")[:2]) if k.startswith("triage.") else k.split(".")[0] for k in sys.modules}}
print(json.dumps({{"imported": imported, "loaded": sorted(loaded)}}))
"""


def _files(part: str):
    folder = ROOT / part
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / "triage" / f"{part}.py"]


def _modules_on_disk(part: str) -> list[str]:
    out = []
    for p in _files(part):
        rel = p.relative_to(ROOT).with_suffix("").parts
        rel = rel[1:] if rel[0] == "triage" else rel
        out.append(".".join(("triage",) + rel).removesuffix(".__init__"))
    return sorted(out)


def _import_all(parts) -> tuple[list[str], set[str]]:
    """Every module of ``parts`` (triage subpackages), imported in a fresh interpreter:
    (modules imported, triage subpackages and third-party top-level packages loaded)."""
    pkgs = [f"triage.{p}" for p in parts]
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL.format(pkgs=pkgs)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["imported"], set(got["loaded"])


def test_core_never_imports_textual_or_heavy_libraries():
    imported, loaded = _import_all(CORE)
    assert sorted(imported) == sorted(m for part in CORE for m in _modules_on_disk(part))  # every module, really
    assert "triage.remediations.quantize" in imported and "triage.analyzers.rules.retry_spiral" in imported
    assert loaded & set(UI + HEAVY + ("triage.tui", "triage.cli", "triage.lab")) == set()


@pytest.mark.parametrize("part", [p for p in RANK if p not in ("lifecycle", "cli")])
def test_loading_a_layer_loads_no_layer_above_it(part):
    imported, loaded = _import_all([part])
    assert len(imported) == len(_modules_on_disk(part)) > 1
    above = {f"triage.{p}" for p, r in RANK.items() if r >= RANK[part] and p != part}
    assert loaded & above == set()


def _imports(path):
    """(line, absolute module name, inside a function) of every import statement in ``path``; relative
    imports are resolved against the file's own package in the installed namespace."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    rel = path.relative_to(ROOT).with_suffix("").parts if path.is_relative_to(ROOT) else ("x",)
    package = ["triage", *[p for p in rel[:-1] if p != "triage"]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1]
            names = [".".join(base + ([node.module] if node.module else []))]
        else:
            continue
        for name in names:
            yield node.lineno, name, id(node) in in_function


def _part_of(name: str) -> str | None:
    bits = name.split(".")
    return bits[1] if bits[0] == "triage" and len(bits) > 1 and bits[1] in RANK else None


def _violations(check) -> list[str]:
    bad = []
    for part in RANK:
        for path in _files(part):
            for line, name, lazy in _imports(path):
                why = check(part, name, lazy)
                if why:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}: {why}")
    return bad


def test_no_import_statement_points_up_a_layer_even_inside_functions():
    def check(part, name, lazy):
        target = _part_of(name)
        if target and target != part and RANK[target] >= RANK[part]:
            return f"{part} must not depend on {target}"
        if name.split(".")[0] in UI and part != "tui":
            return "only the TUI imports Textual"
        if name.split(".")[0] in ("collectors", "analyzers", "remediations", "sessions", "tui", "lab", "cli"):
            return "imported outside the triage namespace"

    assert _violations(check) == []


def test_heavy_libraries_are_imported_only_inside_functions():
    assert _violations(lambda part, name, lazy: name.split(".")[0] in HEAVY and not lazy
                       and "import at module level") == []


def test_the_static_check_sees_function_local_and_relative_imports(tmp_path):
    """The checker itself: a function-local import is found and marked as such; a relative one is resolved."""
    p = ROOT / "tui" / "screens" / "overview.py"
    assert (any(n == "triage.tui.format" for _, n, _ in _imports(p)))
    q = tmp_path / "m.py"
    q.write_text("import os\n\ndef f():\n    from triage.tui.app import TriageApp\n    import torch\n")
    assert [(line, name, lazy) for line, name, lazy in _imports(q)] == [
        (1, "os", False), (4, "triage.tui.app", True), (5, "torch", True)]


def test_every_folder_of_the_namespace_is_in_a_layer():
    """A new top-level package must be placed in the layer order, or these checks would not see it."""
    import tomllib
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    parts = {k.split(".")[1] for k in mapped if k.count(".") == 1}
    assert parts <= set(RANK) and parts == set(RANK) - {"lifecycle"}


def test_help_imports_neither_torch_nor_onnxruntime_nor_textual():
    code = ("import sys\nfrom triage.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED:' + ','.join(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'onnxruntime', 'onnx', 'textual'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "usage: triage" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED:"
