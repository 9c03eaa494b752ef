"""`json.loads` with a nesting limit, for text from outside (request bodies, the principal header).

The standard parser recurses once per nesting level: a body of 100,000 `[` raises RecursionError,
which no caller expects (it surfaced as a 500). The depth is measured before parsing, so hostile text
never reaches the recursive parser; legitimate documents here nest a handful of levels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeep", "loads", "nesting_depth"]

MAX_DEPTH = 32
# A JSON string literal (the only place a bracket does not nest): linear, no nested quantifiers.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeep(ValueError):
    """The text nests arrays/objects deeper than allowed."""

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"nested more than {limit} levels deep (arrays/objects inside each other)")
        self.depth = depth
        self.limit = limit


def nesting_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` outside string literals (0 for a scalar)."""
    # A running sum over the brackets, in C: a 16 MiB model.json of '[' is measured in well under a second.
    return max(accumulate(map(_STEP.__getitem__, _BRACKETS.findall(_STRING.sub("", text)))), default=0)


def loads(
    text: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """Parse JSON like `json.loads`; raises TooDeep (a ValueError) past `max_depth` levels.

    Bytes must be UTF-8 (UnicodeDecodeError, also a ValueError, otherwise).
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise TooDeep(depth, max_depth)
    return json.loads(text, object_pairs_hook=object_pairs_hook)
