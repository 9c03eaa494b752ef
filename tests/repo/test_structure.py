"""How the code is layered and what it offers: shared/ has no import cycle, functions/ stands on at
most three floors, no function module imports a route module, no module imports another's private
names, and every module of shared/ and functions/ declares its public names (`__all__`)."""

from __future__ import annotations

from tests.support.structure import (
    PACKAGES,
    ROOT,
    cycles,
    floors,
    imports_of,
    internal_edges,
    module_name,
    modules,
)

MAX_FUNCTION_FLOORS = 3


def route_modules() -> set[str]:
    """The modules of functions/ that register functions (they create a blueprint)."""
    return {
        name
        for name, module in modules("functions").items()
        if ("functions", "new_blueprint") in module.imports
    }


def test_shared_has_no_import_cycle():
    assert cycles(internal_edges("shared")) == []


def test_functions_stands_on_at_most_three_floors():
    edges = internal_edges("functions")
    assert cycles(edges) == []
    by_floor = floors(edges)
    too_high = {name: floor for name, floor in by_floor.items() if floor > MAX_FUNCTION_FLOORS}
    assert not too_high, (
        f"functions/ must stand on at most {MAX_FUNCTION_FLOORS} floors (a module's floor is one above the "
        f"highest it imports): {too_high}; imports: { {n: sorted(edges[n]) for n in too_high} }"
    )


def test_no_module_of_functions_imports_a_route_module():
    routes = route_modules()
    assert {"functions.api_exports", "functions.timer", "functions.worker"} <= routes
    offenders = {
        name: sorted(edges & routes) for name, edges in internal_edges("functions").items() if edges & routes
    }
    assert not offenders, f"route modules are peers: move what they share out of them ({offenders})"


def test_no_module_imports_a_private_name_from_another():
    offenders = [
        f"{name}: from {source} import {imported}"
        for package in ("shared", "functions")
        for name, module in modules(package).items()
        for source, imported in module.imports
        if imported is not None
        and imported.startswith("_")
        and not imported.startswith("__")
        and source.split(".")[0] in ("shared", "functions", "scripts", "sandbox")
    ]
    assert not offenders


def test_every_module_declares_its_public_names():
    missing = [
        name for package in PACKAGES for name, module in modules(package).items() if module.exports is None
    ]
    assert not missing, f"declare __all__ (the names other packages may import) in: {missing}"


def test_what_other_packages_import_is_in_all():
    """As httpx's test_exported_members: a name another package imports from a module of shared/ or
    functions/ is in that module's __all__, so the public surface is written down in one place."""
    every = {name: module for package in PACKAGES for name, module in modules(package).items()}
    outside: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(part in {".venv", ".venv-iac", "node_modules", "reference"} for part in path.parts):
            continue
        importer = module_name(path)
        for source, imported in imports_of(path, runtime_only=False):
            module = every.get(source)
            if module is None or imported is None or imported.startswith("_"):
                continue
            if source.split(".")[0] == importer.split(".")[0] or f"{source}.{imported}" in every:
                continue
            if imported not in (module.exports or []):
                outside.append(f"{importer}: from {source} import {imported}")
    assert not outside, "imported from another package but not in the module's __all__:\n" + "\n".join(
        outside
    )


def test_all_names_only_what_the_module_has():
    ghosts = [
        f"{name}.{exported}"
        for package in PACKAGES
        for name, module in modules(package).items()
        for exported in module.exports or []
        if exported not in module.defined
    ]
    assert not ghosts
