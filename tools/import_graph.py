"""The repository's structure drawn from its imports: which part of livewatch imports which, in layers.

    python tools/import_graph.py            # the parts in layers (top first), each with what it imports
    python tools/import_graph.py --dot      # the same as a Graphviz graph (dot -Tsvg > structure.svg)
    python tools/import_graph.py --modules  # module by module instead of part by part

A part is a sub-package (``engine``, ``local``, ``cluster``...) or a top-level module (``daemon``, ``backend``...).
Imports inside functions (lazy ones, such as the daemon choosing its backend) count like the others; imports under
``if TYPE_CHECKING:`` do not (they never run). Circles are reported (and fail ``tests/test_layout.py``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "livewatch"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The livewatch modules ``path`` imports (``from livewatch.x import y`` names module ``livewatch.x.y`` when
    that is a module, else ``livewatch.x``)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
    this = module_name(path)
    return {m for m in found if m in known and m != this}


def module_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / PACKAGE).rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "livewatch (package)"
    return parts[1]  # a sub-package, or a top-level module


def part_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in modules.items():
        part = part_of(module)
        graph.setdefault(part, set()).update(part_of(t) for t in targets if part_of(t) != part)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Top first: a node sits above everything it imports (a circle's members share the layer of its deepest)."""
    depth: dict[str, int] = {}

    def height(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node in depth:
            return depth[node]
        below = [height(n, seen | {node}) for n in graph.get(node, ()) if n not in seen and n != node]
        depth[node] = 1 + max(below, default=-1)
        return depth[node]

    for node in graph:
        height(node)
    top = max(depth.values(), default=0)
    return [sorted(n for n, d in depth.items() if d == level) for level in range(top, -1, -1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print a Graphviz graph")
    parser.add_argument("--modules", action="store_true", help="module by module")
    args = parser.parse_args(argv)
    modules = module_graph()
    graph = modules if args.modules else part_graph(modules)
    if args.dot:
        print("digraph livewatch {\n  rankdir=TB; node [shape=box, fontname=Helvetica];")
        for node in sorted(graph):
            for target in sorted(graph[node]):
                print(f'  "{node}" -> "{target}";')
        print("}")
    else:
        for level, nodes in enumerate(layers(graph)):
            for node in nodes:
                print(f"{level:2d}  {node:28s} -> {', '.join(sorted(graph[node])) or '-'}")
    circles = cycles(graph)
    for group in circles:
        print(f"circle: {' <-> '.join(group)}", file=sys.stderr)
    return 1 if circles else 0


if __name__ == "__main__":
    raise SystemExit(main())
