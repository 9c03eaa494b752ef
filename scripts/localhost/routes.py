"""HTTP trigger route templates (`exports/{name}/runs/{runId}`) matched as ASP.NET Core routing does.

Pure. Supported: literal segments (case-insensitive), `{param}`, optional `{param?}` as the last
segment, catch-all `{*param}`, and the constraints `int`, `alpha`, `bool`, `guid`. When several
routes match, the most specific wins: literals before parameters before catch-alls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")
_PARAM = re.compile(r"^\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?(\?)?\}$")
_CONSTRAINTS = {
    "int": re.compile(r"^-?\d+$"),
    "alpha": re.compile(r"^[A-Za-z]+$"),
    "bool": re.compile(r"^(?i:true|false)$"),
    "guid": re.compile(r"^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$"),
}


class RouteError(ValueError):
    pass


@dataclass(frozen=True)
class _Segment:
    literal: str | None = None
    param: str | None = None
    constraint: str | None = None
    optional: bool = False
    catch_all: bool = False


@dataclass(frozen=True)
class Route(Generic[T]):
    template: str
    segments: tuple[_Segment, ...]
    methods: frozenset[str] | None  # None: every method
    target: T

    @property
    def rank(self) -> tuple[int, ...]:
        # Lower sorts first: literal 0, constrained parameter 1, parameter 2, catch-all 3.
        def score(s: _Segment) -> int:
            if s.literal is not None:
                return 0
            if s.catch_all:
                return 3
            return 1 if s.constraint else 2

        return tuple(score(s) for s in self.segments)


def parse_route(template: str, methods: Sequence[str] | None, target: T) -> Route[T]:
    parts = [p for p in template.strip("/").split("/") if p != ""] if template.strip("/") else []
    segments: list[_Segment] = []
    for i, part in enumerate(parts):
        match = _PARAM.match(part)
        if match is None:
            if "{" in part or "}" in part:
                raise RouteError(f"route {template!r}: segment {part!r} mixes text and a parameter")
            segments.append(_Segment(literal=part.lower()))
            continue
        star, name, constraint, optional = match.groups()
        if constraint is not None and constraint.lower() not in _CONSTRAINTS:
            raise RouteError(f"route {template!r}: constraint {constraint!r} is not supported locally")
        last = i == len(parts) - 1
        if (star or optional) and not last:
            raise RouteError(f"route {template!r}: only the last segment may be optional or a catch-all")
        segments.append(
            _Segment(
                param=name,
                constraint=constraint.lower() if constraint else None,
                optional=bool(optional),
                catch_all=bool(star),
            )
        )
    allowed = frozenset(m.upper() for m in methods) if methods else None
    return Route(template=template, segments=tuple(segments), methods=allowed, target=target)


def _match(route: Route[T], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    segments = route.segments
    for i, segment in enumerate(segments):
        if segment.catch_all:
            params[segment.param or ""] = "/".join(parts[i:])
            return params
        if i >= len(parts):
            if segment.optional and i == len(parts):
                return params
            return None
        part = parts[i]
        if segment.literal is not None:
            if part.lower() != segment.literal:
                return None
            continue
        if segment.constraint and not _CONSTRAINTS[segment.constraint].match(part):
            return None
        params[segment.param or ""] = part
    return params if len(parts) == len(segments) else None


class Router(Generic[T]):
    def __init__(self, routes: Sequence[Route[T]]) -> None:
        self.routes = sorted(routes, key=lambda r: r.rank)

    def find(self, method: str, path: str) -> tuple[Route[T], dict[str, str]] | None:
        """The route for `method path` (path below the prefix, still URL-encoded) and its parameters.

        A path that matches only with another method finds nothing, as on the real host (404).
        """
        raw_parts = [p for p in path.strip("/").split("/") if p != ""]
        parts = [unquote(p) for p in raw_parts]
        for route in self.routes:
            if route.methods is not None and method.upper() not in route.methods:
                continue
            params = _match(route, parts)
            if params is not None:
                return route, params
        return None
