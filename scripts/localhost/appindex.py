"""Find the functions an app registers and what each trigger needs, as the host's indexing does.

The Python worker imports the script root's `function_app.py`, takes every FunctionApp object in it
and asks for `get_functions()`; the host then reads each function's bindings (its function.json
equivalent). Binding properties written `%NAME%` are app settings, resolved here from the
environment; one that does not resolve puts that function in error, as on Azure, and the others
still run.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

_SETTING = re.compile(r"%([^%]+)%")


class BindingError(Exception):
    """A function cannot be served; the message says why (shown in the banner)."""


@dataclass(frozen=True)
class AppFunction:
    name: str
    trigger: dict[str, Any]  # the trigger binding, app settings resolved
    arg_name: str
    user_function: Callable[..., Any]
    other_bindings: tuple[dict[str, Any], ...] = field(default=())

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])


@dataclass
class AppIndex:
    functions: list[AppFunction]
    errors: dict[str, str]  # function name -> why it is not served


def resolve_settings(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace `%NAME%` in a binding property by the app setting NAME (the host's binding expressions)."""
    if not isinstance(value, str):
        return value

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = env.get(name)
        if resolved is None or not resolved.strip():
            raise BindingError(f"{where}: '%{name}%' does not resolve to a value: set the app setting {name}")
        return resolved.strip()

    return _SETTING.sub(setting, value)


def _plain(value: Any) -> Any:
    # Bindings hold enums (AuthLevel, HttpMethod, direction): the host reads their string values.
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


def load_apps(script_root: Path) -> list[func.FunctionApp]:
    """Import `function_app.py` from `script_root` and return the FunctionApp objects it defines."""
    root = str(script_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module("function_app")
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionApp)]
    if not apps:
        raise SystemExit(f"{script_root / 'function_app.py'} defines no azure.functions.FunctionApp object")
    return apps


def index_app(apps: list[func.FunctionApp], env: Mapping[str, str]) -> AppIndex:
    index = AppIndex(functions=[], errors={})
    for app in apps:
        for fn in app.get_functions():
            name = str(fn.get_function_name())
            bindings = [
                {key: _plain(val) for key, val in binding.items()}
                for binding in fn.get_bindings_dict()["bindings"]
            ]
            try:
                resolved = [
                    {
                        key: resolve_settings(val, env, f"function {name}, binding {b.get('name')}.{key}")
                        for key, val in b.items()
                    }
                    for b in bindings
                ]
            except BindingError as exc:
                index.errors[name] = str(exc)
                continue
            triggers = [b for b in resolved if str(b.get("type", "")).endswith("Trigger")]
            if len(triggers) != 1:
                index.errors[name] = f"function {name} has {len(triggers)} triggers; exactly one is needed"
                continue
            trigger = triggers[0]
            others = tuple(b for b in resolved if b is not trigger)
            unsupported = [
                b["type"] for b in others if not (b.get("type") == "http" and b.get("name") == "$return")
            ]
            if unsupported:
                index.errors[name] = (
                    f"function {name} uses binding(s) {', '.join(map(str, unsupported))}, which the local host does "
                    "not implement (use func start)"
                )
                continue
            index.functions.append(
                AppFunction(
                    name=name,
                    trigger=trigger,
                    arg_name=str(trigger["name"]),
                    user_function=fn.get_user_function(),
                    other_bindings=others,
                )
            )
    return index
