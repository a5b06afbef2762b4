"""Messages up, attributes down (tui/messages.py): screens and widgets ask the app for things by posting messages
and use only Textual's own App API on ``self.app``; every worker is the app's, and returns its results as
messages, so no state is assigned from a worker thread. Read from the source (AST), so a new screen, widget or
worker is checked without being listed here."""
import ast
from pathlib import Path

from textual.app import App

from conftest import ROOT
from triage.tui import messages
from triage.tui.app import TriageApp

TUI = ROOT / "tui"
# Textual's App API a screen or widget may call on the app; none of them is TriageApp's own
ALLOWED = {"push_screen", "pop_screen", "switch_screen", "post_message", "notify", "bell", "exit",
           "copy_to_clipboard"}


def _app_uses(tree: ast.AST) -> list[str]:
    """Every use of ``<x>.app`` that is not a call of an allowed method on it, as 'line: source'."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "app":
            use = parents.get(node)
            called = (isinstance(use, ast.Attribute) and use.attr in ALLOWED and isinstance(parents.get(use), ast.Call)
                      and parents[use].func is use)
            if not called:
                bad.append(f"{node.lineno}: {ast.unparse(use if isinstance(use, ast.Attribute) else node)}")
    return bad


def _is_work(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "work") or (
        isinstance(target, ast.Attribute) and target.attr == "work")


def _workers(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(_is_work(d) for d in n.decorator_list)]


def _worker_writes(fn: ast.FunctionDef) -> list[str]:
    """State a worker sets itself instead of posting a message: ``self.x = ...`` (also augmented, also in
    nested functions and lambdas), setattr, call_from_thread."""
    bad = []
    for node in ast.walk(fn):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                    bad.append(f"{fn.name} line {node.lineno}: assigns {ast.unparse(sub)}")
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("setattr", "call_from_thread"):
                bad.append(f"{fn.name} line {node.lineno}: {ast.unparse(f)}")
    return bad


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), str(path))


def _ui_modules() -> list[Path]:
    return sorted([*(TUI / "screens").glob("*.py"), *(TUI / "widgets").glob("*.py")])


def test_the_allowed_calls_are_textual_api_not_the_apps_own():
    for name in ALLOWED:
        assert any(name in vars(c) for c in App.__mro__), f"{name} is not Textual's App API"
        assert name not in vars(TriageApp), f"TriageApp defines {name}: screens must post a message instead"


def test_screens_and_widgets_use_only_textual_api_on_the_app():
    bad = {p.relative_to(ROOT).as_posix(): uses for p in _ui_modules() if (uses := _app_uses(_tree(p)))}
    assert not bad, f"post a message (tui/messages.py) instead of calling or reading the app: {bad}"


def test_screens_and_widgets_reach_the_fixes_and_sessions_only_through_the_app():
    bad = []
    for p in _ui_modules():
        for node in ast.walk(_tree(p)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{p.name}: {n}" for n in names if n.startswith(("triage.remediations", "triage.sessions"))]
    assert not bad


def test_every_worker_is_the_apps_and_returns_results_as_messages():
    modules = sorted(TUI.rglob("*.py"))
    assert TUI / "app.py" in modules and TUI / "screens" / "requests.py" in modules
    elsewhere = {p.relative_to(ROOT).as_posix(): [f.name for f in _workers(_tree(p))]
                 for p in modules if p != TUI / "app.py"}
    assert not {p: w for p, w in elsewhere.items() if w}, "workers belong to the app (post it a message)"
    workers = _workers(_tree(TUI / "app.py"))
    assert {"analyze", "live_refresh", "fetch_requests", "load_trace", "run_quantize"} <= {w.name for w in workers}
    bad = [b for w in workers for b in _worker_writes(w)]
    assert not bad, f"a worker posts a message; the app assigns its state in the handler: {bad}"


def test_every_message_has_a_handler_on_the_app():
    classes = [c for c in vars(messages).values()
               if isinstance(c, type) and issubclass(c, messages.Message) and c is not messages.Message]
    assert len(classes) > 10
    missing = [c.__name__ for c in classes if not callable(getattr(TriageApp, c.handler_name, None))]
    assert not missing, f"posted to the app, handled nowhere: {missing}"


def test_the_checks_catch_what_they_are_for():
    screen = ast.parse("class S:\n    def a(self):\n        self.app.preview_quantize(1)\n"
                       "    def b(self):\n        return self.app.live\n"
                       "    def c(self):\n        self.app.notify('x')\n        self.screen.app.pop_screen()\n")
    assert sorted(u.split(":")[0] for u in _app_uses(screen)) == ["3", "5"]
    app = ast.parse("class A:\n    @work(thread=True)\n    def w(self):\n        self.store = 1\n"
                    "        f = lambda: self.call_from_thread(print)\n        self.post_message(M())\n"
                    "    def handler(self, msg):\n        self.store = msg.store\n")
    (w,) = _workers(app)
    assert len(_worker_writes(w)) == 2
