"""Readers behind one protocol: every format is one module of ``collectors/readers``, registered once in
``READERS``, with the same ``sniff`` and ``read``; no reader imports another, and the collectors have no
import circle (imports inside functions included)."""
from __future__ import annotations

import ast
import inspect

from conftest import ROOT

from triage.collectors import detect
from triage.collectors.readers import READERS

READERS_DIR = ROOT / "collectors" / "readers"


def _imports(path) -> set[str]:
    """The modules of ``triage.collectors`` that a file of it imports anywhere in it, as dotted names relative
    to ``collectors`` (``readers.otlp_json``, ``spans``)."""
    package = list(path.relative_to(ROOT / "collectors").with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] + (node.module or "").split(".")
            elif (node.module or "").startswith("triage.collectors"):
                base = node.module.split(".")[2:]
            else:
                continue
            base = [part for part in base if part]
            for alias in node.names:
                name = ".".join(base + [alias.name])
                out.add(name if _is_module(name) else ".".join(base))
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".", 2)[2] for a in node.names if a.name.startswith("triage.collectors."))
    return {m for m in out if m}


def _is_module(dotted: str) -> bool:
    path = ROOT / "collectors" / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _module_name(path) -> str:
    return ".".join(path.relative_to(ROOT / "collectors").with_suffix("").parts).removesuffix(".__init__")


def test_every_reader_module_is_registered_once_with_the_same_protocol():
    modules = sorted(p.stem for p in READERS_DIR.glob("*.py") if p.stem != "__init__")
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in READERS) == modules
    formats = [m.FORMAT for m in READERS]
    assert len(set(formats)) == len(formats)
    for m in READERS:
        assert list(inspect.signature(m.sniff).parameters) == ["head", "size"], m.__name__
        assert list(inspect.signature(m.read).parameters) == ["src", "sink", "pool", "progress"], m.__name__


def test_no_reader_imports_another():
    for path in READERS_DIR.glob("*.py"):
        if path.stem == "__init__":
            continue
        others = {i for i in _imports(path) if i.startswith("readers")}
        assert others == set(), f"{path.name} imports {others}"


def test_no_import_circle_in_collectors():
    graph = {_module_name(p): _imports(p) for p in (ROOT / "collectors").rglob("*.py")}
    graph = {m: {i for i in deps if i in graph and i != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import circle: " + " -> ".join(path + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_detection_asks_the_readers_in_table_order():
    assert detect.detect(b"  \n", 3) == (None, "empty file")
    assert detect.detect(b'{"foo": 1}', 10)[0] is None
    head = b'{"resourceSpans": [], "resultType": "x"}'
    assert detect.detect(head, len(head))[0].FORMAT == "otlp-json"
    head = b"# TYPE x counter\nx 1\n"
    assert detect.detect(head, len(head))[0].FORMAT == "prometheus-text"
    head = b'name: "m"\nmax_batch_size: 8\n'
    assert detect.detect(head, len(head))[0].FORMAT == "triton-config"
    assert detect.detect(b"\x01\x02\x03garbage", 10) == (None, "unknown format")
