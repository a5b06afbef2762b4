"""The package as ``pip install .`` lays it out (issue 13): one ``triage`` namespace in site-packages and
nothing generic beside it; the layer contracts of pyproject.toml ([tool.importlinter]) hold on it; and there is
no import circle anywhere in it, lazy (function-local) imports included.

The checks run on the installed copy, not the checkout: in the checkout triage's subpackages are folders beside
``triage/`` (setuptools' package-dir maps them), which an import-graph builder scanning ``triage/`` would not see."""
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent

CYCLES = r"""
import json, sys
import grimp
graph = grimp.build_graph("triage", cache_dir=None)
modules = sorted(graph.modules)
edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
# Tarjan's strongly connected components: any component of more than one module is an import circle.
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(sorted(comp))
for m in modules:
    if m not in index:
        visit(m)
print(json.dumps({"modules": len(modules), "cycles": comps}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed (no dependencies) into an empty target folder."""
    tmp = tmp_path_factory.mktemp("layout")
    wheel_dir, target, source = tmp / "wheel", tmp / "site-packages", tmp / "source"
    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values():
        if not (source / folder).exists():
            shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheel_dir)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheel_dir.glob("triage-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, target


def _in(target: Path, *cmd: str, **kw) -> subprocess.CompletedProcess:
    """Run with only the installed copy importable as triage (not the checkout)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(target.parent)}
    return subprocess.run(list(cmd), cwd=target.parent, env=env, capture_output=True, text=True, timeout=600, **kw)


def test_pip_install_puts_only_triage_into_site_packages(installed):
    wheel, target = installed
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/")[0] for n in z.namelist()}
    assert tops == {"triage", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {p.name for p in target.iterdir()} - {"bin"} == tops
    assert sorted(p.name for p in (target / "bin").iterdir()) == ["triage"]
    # and what is there is the whole program: every module of the checkout (a subpackage missing from
    # pyproject's `packages` would silently be left out), data files included, and it runs from there
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    in_checkout = {str(Path(pkg.replace(".", "/")) / f.relative_to(ROOT / folder))
                   for pkg, folder in mapped.items() for f in (ROOT / folder).rglob("*.py")
                   if "__pycache__" not in f.parts}
    in_wheel = {str(f.relative_to(target)) for f in (target / "triage").rglob("*.py") if "__pycache__" not in f.parts}
    assert in_checkout == in_wheel
    # with its data files included, and it runs from there
    assert (target / "triage" / "tui" / "app.tcss").is_file()
    assert any((target / "triage" / "sample_traces").glob("*/otlp/*"))
    out = _in(target, sys.executable, "-c", "import triage.cli.main as m, triage; print(m.__file__)")
    assert out.returncode == 0 and out.stdout.startswith(str(target)), out.stderr


def test_layer_contracts_hold_on_the_installed_package(installed):
    _, target = installed
    out = _in(target, str(BIN / "lint-imports"), str(ROOT / "pyproject.toml"), "--no-cache")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_circles_anywhere_in_the_package(installed):
    _, target = installed
    out = _in(target, sys.executable, "-c", CYCLES)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["modules"] > 100
    assert got["cycles"] == []


def test_the_circle_finder_finds_a_circle(tmp_path):
    """The checker itself, on a two-module package that imports itself in a circle (one import lazy)."""
    pkg = tmp_path / "triage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from triage import b\n")
    (pkg / "b.py").write_text("def f():\n    from triage import a\n")
    out = subprocess.run(
        [sys.executable, "-c", CYCLES], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout)["cycles"] == [["triage.a", "triage.b"]], out.stderr
