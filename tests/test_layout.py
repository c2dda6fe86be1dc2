"""The structure the code keeps (the "house" rules), checked on every run rather than by review.

- ``livewatch/server/`` speaks the protocol only: it imports nothing from ``livewatch.engine`` (the daemon converts
  between protocol requests and engine types).
- No module reaches into another object's private attributes: ``obj._name`` only where this module itself
  assigns ``_name`` (its own objects, or attributes it attaches to a library's), besides ``self``/``cls``.
- Client-facing errors carry our own words: where an exception's text goes into an error a client sees
  (``RequestError``, ``ProtocolError``, ``OpenAIError``, ``WatchProtocolError``, ``CameraError``, ``EngineError``),
  the exception was caught as one of livewatch's own classes, never a library's or Python's (whose text may hold
  internals: "year 0 is out of range", a path, a library version).
- Modules stay small (one idea each): at most ``MAX_LINES`` lines, except the Triton kernels, which keep every
  kernel beside its reference.
- One daemon over a camera backend: no class derives from ``Daemon``; no function takes the daemon (or anything
  named so) as ``Any``; the daemon, the server and the cluster backend (a cluster's front) import no torch,
  transformers or Triton when loaded (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 470
LONG_ALLOWED = {"livewatch/engine/model/kernels.py"}
# transformers' own API, used as documented by transformers (not another livewatch object's private state)
LIBRARY_PRIVATE = {"_from_config", "_attn_implementation"}


def modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_server_does_not_import_the_engine() -> None:
    offenders = []
    for path in modules("livewatch/server"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("livewatch.engine")]
    assert not offenders, offenders


def private_accesses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    assigned = {t.attr for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Attribute)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if node.attr in assigned or node.attr in LIBRARY_PRIVATE:
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("folder", ["livewatch", "tools"])
def test_no_private_attribute_access_across_modules(folder: str) -> None:
    found = [hit for path in modules(folder) for hit in private_accesses(path)]
    assert not found, found


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules("livewatch", "tools")
            if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(ROOT)) not in LONG_ALLOWED}
    assert not long, long


CLIENT_ERRORS = {"RequestError", "ProtocolError", "OpenAIError", "WatchProtocolError", "CameraError", "EngineError"}


def _own_exception_classes() -> set[str]:
    own: set[str] = set()
    for path in modules("livewatch"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception", "Request")):
                own.add(node.name)
    return own


def _handler_types(handler: ast.ExceptHandler) -> list[str]:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return [k.attr if isinstance(k, ast.Attribute) else k.id if isinstance(k, ast.Name) else "?" for k in kinds
            if k is not None]


def test_exception_text_reaches_clients_only_from_our_own_exceptions() -> None:
    own = _own_exception_classes()
    offenders = []
    for path in modules("livewatch"):
        for handler in ast.walk(ast.parse(path.read_text())):
            if not isinstance(handler, ast.ExceptHandler) or handler.name is None:
                continue
            foreign = [t for t in _handler_types(handler) if t not in own]
            if not foreign:
                continue
            for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                        in CLIENT_ERRORS):
                    continue
                uses = any(isinstance(n, ast.Name) and n.id == handler.name
                           for arg in [*node.args, *(k.value for k in node.keywords)] for n in ast.walk(arg))
                if uses:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: text of {foreign} in a client error")
    assert not offenders, offenders


def test_no_class_derives_from_the_daemon() -> None:
    subclasses = [f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}"
                  for path in modules("livewatch", "tools") for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.ClassDef)
                  and any(isinstance(b, (ast.Name, ast.Attribute)) and ast.unparse(b).split(".")[-1] == "Daemon"
                          for b in node.bases)]
    assert not subclasses, subclasses


def test_no_parameter_is_an_any_typed_daemon() -> None:
    found = []
    for path in modules("livewatch"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in [*node.args.args, *node.args.kwonlyargs]:
                    if "daemon" in arg.arg and arg.annotation is not None and ast.unparse(arg.annotation) == "Any":
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}({arg.arg}: Any)")
    assert not found, found


def test_the_front_and_the_server_load_no_model_stack() -> None:
    code = (
        "import sys\n"
        "import livewatch.daemon, livewatch.cli, livewatch.client, livewatch.cluster.backend\n"
        "import livewatch.server.web, livewatch.server.handler, livewatch.server.openai_http\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'triton'))\n"
        "assert not heavy, heavy[:10]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_imports_point_down_without_circles() -> None:
    """Part by part and module by module (tools/import_graph.py draws it); the daemon is imported by the CLI only,
    so the backends (local, cluster) sit below it."""
    for flag in ([], ["--modules"]):
        out = subprocess.run([sys.executable, "tools/import_graph.py", *flag], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "tools/import_graph.py", "--modules"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    importers = [line.split()[1] for line in out.stdout.splitlines()
                 if "livewatch.daemon" in line.split("->", 1)[1].replace(",", " ").split()]
    assert importers == ["livewatch.cli"], importers
