"""How the code is layered and what it offers: shared/ has no import cycle, functions/ stands on at
most three floors, no function module imports a route module, no module imports another's private
names, and every module of shared/ and functions/ declares its public names (`__all__`)."""

from __future__ import annotations

from tests.support.structure import (
    PACKAGES,
    cycles,
    floors,
    internal_edges,
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


def test_all_names_only_what_the_module_has():
    ghosts = [
        f"{name}.{exported}"
        for package in PACKAGES
        for name, module in modules(package).items()
        for exported in module.exports or []
        if exported not in module.defined
    ]
    assert not ghosts
