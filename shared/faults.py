"""Named crash points for tests: a process stops dead (as under `kill -9`) at the point it is told to.

Tests of "a process killed between any two writes leaves nothing behind" cannot time a real kill to
land between two storage writes a few milliseconds apart; these points make it deterministic. They
are armed only through the TEST_CRASH_AT setting, which shared/settings.py refuses on Azure, so
`fault_point` is a set lookup that never fires in production.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["arm", "fault_point"]

log = logging.getLogger(__name__)
# Exit status of a process ended at a crash point: what a shell reports for `kill -9`.
CRASH_EXIT_STATUS = 137
_armed: frozenset[str] = frozenset()


def arm(points: frozenset[str]) -> None:
    """Make the process stop dead at each named point (an empty set disarms)."""
    global _armed
    _armed = points


def fault_point(name: str) -> None:
    """Stop the process at once, running no cleanup (no `finally`, no lease release), if `name` is armed."""
    if name in _armed:
        log.critical("crash point %s reached: the process stops now (TEST_CRASH_AT)", name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_STATUS)
