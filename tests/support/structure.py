"""The shape of the code: what each module of shared/ and functions/ declares public (`__all__`), and
how the modules import each other (no cycle in shared/, at most three floors in functions/).

Read from the source (ast), not by importing: cheap, and it sees imports inside functions too
(they are dependencies all the same); only imports under `if TYPE_CHECKING:` are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "functions")


@dataclass
class Module:
    name: str  # dotted: shared.errors, functions (the package's __init__)
    path: Path
    tree: ast.Module
    exports: list[str] | None  # __all__, None when the module declares none
    defined: set[str] = field(default_factory=set)  # names bound at module level
    # (module imported, name imported or None for `import x`), at run time
    imports: list[tuple[str, str | None]] = field(default_factory=list)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (n for orelse in child.orelse for n in [orelse, *_runtime_nodes(orelse)])
            continue
        yield child
        yield from _runtime_nodes(child)


def _absolute(module: str | None, level: int, here: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = here.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _exports(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert isinstance(value, ast.List | ast.Tuple), "__all__ must be a literal list"
            return [ast.literal_eval(e) for e in value.elts]
    return None


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        for sub in [node, *(n for n in ast.walk(node) if isinstance(node, ast.If | ast.Try))]:
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(sub.name)
            elif isinstance(sub, ast.Assign):
                names |= {n.id for t in sub.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(sub, ast.AnnAssign | ast.AugAssign) and isinstance(sub.target, ast.Name):
                names.add(sub.target.id)
            elif isinstance(sub, ast.Import):
                names |= {(a.asname or a.name).split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                names |= {a.asname or a.name for a in sub.names}
    return names


def imports_of(
    path: Path, tree: ast.Module | None = None, *, runtime_only: bool = True
) -> list[tuple[str, str | None]]:
    """(module imported, name imported or None for `import x`) for every import of the file."""
    tree = tree or ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    nodes = _runtime_nodes(tree) if runtime_only else ast.walk(tree)
    found: list[tuple[str, str | None]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, here, path.name == "__init__.py")
            found += [(source, alias.name) for alias in node.names]
    return found


@cache
def modules(package: str) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name = module_name(path)
        found[name] = Module(name, path, tree, _exports(tree), _defined(tree), imports_of(path, tree))
    return found


def internal_edges(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports at run time."""
    mods = modules(package)
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, module in mods.items():
        for source, imported in module.imports:
            target = f"{source}.{imported}" if imported and f"{source}.{imported}" in mods else source
            if target in mods and target != name:
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """1 for a module importing none of its package, else one above the highest it imports."""

    @cache
    def floor(node: str) -> int:
        return 1 + max((floor(n) for n in edges[node]), default=0)

    return {node: floor(node) for node in edges}
