"""Call a user function as the host does, logging `Executing` / `Executed` lines like Core Tools.

`Invocations` counts what is running so a stop can wait for it to finish.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from typing import Any

from scripts.localhost.appindex import AppFunction

log = logging.getLogger("host")


class Invocations:
    def __init__(self) -> None:
        self._running = 0
        self._cond = threading.Condition()

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    def __enter__(self) -> None:
        with self._cond:
            self._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, timeout=timeout)


def invoke(fn: AppFunction, argument: Any, reason: str, invocations: Invocations) -> Any:
    """Run `fn` with its trigger argument. Exceptions propagate after the `Failed` line is logged."""
    invocation_id = str(uuid.uuid4())
    log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", fn.name, reason, invocation_id)
    started = time.monotonic()
    with invocations:
        try:
            result = fn.user_function(**{fn.arg_name: argument})
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as exc:
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s: %s",
                fn.name,
                invocation_id,
                (time.monotonic() - started) * 1000,
                type(exc).__name__,
                exc,
            )
            raise
    log.info(
        "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
        fn.name,
        invocation_id,
        (time.monotonic() - started) * 1000,
    )
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
