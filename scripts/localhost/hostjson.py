"""host.json as the host reads it: the file, then `AzureFunctionsJobHost__a__b` app settings over it.

Only the parts the local host acts on are parsed: the HTTP route prefix and the queue trigger's
settings, with the host's defaults where host.json is silent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OVERRIDE_PREFIX = "AzureFunctionsJobHost__"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


class HostJsonError(ValueError):
    pass


@dataclass(frozen=True)
class QueueSettings:
    max_dequeue_count: int = 5
    batch_size: int = 16
    new_batch_threshold: int | None = None
    visibility_timeout: float = 0.0  # seconds a failed message stays invisible before its retry
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueSettings = QueueSettings()
    function_timeout: float | None = None


def timespan_seconds(value: Any, where: str) -> float:
    """A .NET TimeSpan such as "00:00:30" (or a number of milliseconds, as host.json allows for some)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    match = _TIMESPAN.match(str(value).strip())
    if not match:
        raise HostJsonError(f"{where} must be a time span such as 00:00:30, got {value!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float("0." + fraction) if fraction else 0.0)


def _merge_overrides(doc: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(OVERRIDE_PREFIX):
            continue
        path = [part for part in name[len(OVERRIDE_PREFIX) :].split("__") if part]
        node = doc
        for part in path[:-1]:
            key = next((k for k in node if k.lower() == part.lower()), part)
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        if path:
            key = next((k for k in node if k.lower() == path[-1].lower()), path[-1])
            node[key] = value


def _get(node: Mapping[str, Any], key: str) -> Any:
    # The host reads host.json case-insensitively.
    return next((v for k, v in node.items() if k.lower() == key.lower()), None)


def _int(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HostJsonError(f"{where} must be a whole number, got {value!r}") from None


def load_host_config(script_root: Path, env: Mapping[str, str]) -> HostConfig:
    path = script_root / "host.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError as exc:
        raise HostJsonError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HostJsonError(f"{path} must hold a JSON object")
    _merge_overrides(doc, env)
    extensions = _get(doc, "extensions") or {}
    http = _get(extensions, "http") or {}
    queues = _get(extensions, "queues") or {}
    prefix = _get(http, "routePrefix")
    q = QueueSettings()
    values: dict[str, Any] = {}
    if (raw := _get(queues, "maxDequeueCount")) is not None:
        values["max_dequeue_count"] = _int(raw, "extensions.queues.maxDequeueCount")
    if (raw := _get(queues, "batchSize")) is not None:
        values["batch_size"] = _int(raw, "extensions.queues.batchSize")
    if (raw := _get(queues, "newBatchThreshold")) is not None:
        values["new_batch_threshold"] = _int(raw, "extensions.queues.newBatchThreshold")
    if (raw := _get(queues, "visibilityTimeout")) is not None:
        values["visibility_timeout"] = timespan_seconds(raw, "extensions.queues.visibilityTimeout")
    if (raw := _get(queues, "maxPollingInterval")) is not None:
        values["max_polling_interval"] = timespan_seconds(raw, "extensions.queues.maxPollingInterval")
    if (raw := _get(queues, "messageEncoding")) is not None:
        values["message_encoding"] = str(raw).lower()
    timeout = _get(doc, "functionTimeout")
    return HostConfig(
        route_prefix=("api" if prefix is None else str(prefix)).strip("/"),
        queues=QueueSettings(**{**q.__dict__, **values}),
        function_timeout=timespan_seconds(timeout, "functionTimeout") if timeout is not None else None,
    )
