"""The request and answer values passed between the HTTP plumbing and the route handlers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes = b""

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def int_param(self, name: str, default: int, *, maximum: int | None = None) -> int:
        raw = self.param(name)
        value = int(raw) if raw is not None and raw.strip().lstrip("-").isdigit() else default
        value = max(0, value)
        return min(value, maximum) if maximum is not None else value


@dataclass
class Reply:
    status: int
    body: object = None  # JSON value, or a str sent as-is with `content_type`
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = "ok"
    contacts: int = 0

    def encode(self) -> bytes:
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")


def message(status: int, text: str, *, outcome: str = "ok") -> Reply:
    """The plain `{"message": ...}` error body most endpoints use."""
    return Reply(status, {"message": text}, outcome=outcome)


def parse_json(body: bytes) -> object:
    """The decoded body, or raises ValueError (also for bodies that are not UTF-8)."""
    return json.loads(body.decode("utf-8"))
