"""The run message on the `export-runs` queue: which run of which export to work on.

JSON, small (far under the 64 KB queue limit) and never carrying a secret or personal data: the
worker loads everything else from app storage. `continuation` counts how many times the run was
handed on after its time budget ran out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from shared import boundedjson

__all__ = ["RUN_ID", "InvalidRunMessage", "RunMessage", "queue_text"]

# What a run id may be: in a message, and in the API's URLs (functions/resources.py).
RUN_ID = re.compile(r"[0-9A-Za-z-]{1,80}")
_EXPORT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the export name rule of the config schema
_FIELDS = {"runId", "export", "dryRun", "full", "force", "continuation"}


def queue_text(body: bytes) -> bytes:
    """A queue message's text, whichever way it was written: plain JSON, or base64-encoded JSON.

    host.json sets `messageEncoding: none`, so the host hands the function the bytes as they are in
    the queue. Microsoft's pages disagree on whether Event Grid writes events to a storage queue
    base64-encoded or as plain JSON, and the app writes its own messages base64-encoded (the
    storage SDK's encode policy): every queue function reads both. JSON starts with `{` or `[`,
    which base64's alphabet does not hold, so the two never mix up. Anything else is returned as it
    is, for the parser to say what is wrong with it.
    """
    text = body.strip()
    if text[:1] in (b"{", b"["):
        return text
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return body


class InvalidRunMessage(ValueError):
    """The message cannot be a run message; retrying it would never help."""


@dataclass(frozen=True)
class RunMessage:
    run_id: str
    export: str
    dry_run: bool = False
    full: bool = False
    force: bool = False
    continuation: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "runId": self.run_id,
                "export": self.export,
                "dryRun": self.dry_run,
                "full": self.full,
                "force": self.force,
                "continuation": self.continuation,
            }
        )

    def next_continuation(self) -> RunMessage:
        return RunMessage(
            self.run_id, self.export, self.dry_run, self.full, self.force, self.continuation + 1
        )

    @classmethod
    def parse(cls, body: bytes | str) -> RunMessage:
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            doc: Any = boundedjson.loads(text, max_depth=1)
        except (UnicodeDecodeError, ValueError):
            raise InvalidRunMessage("not JSON text") from None
        if not isinstance(doc, dict):
            raise InvalidRunMessage("not a JSON object")
        unknown = sorted(set(doc) - _FIELDS)
        if unknown:
            raise InvalidRunMessage(f"unknown fields {unknown}; expected {sorted(_FIELDS)}")
        run_id, export = doc.get("runId"), doc.get("export")
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise InvalidRunMessage("runId missing or not a run id")
        if not isinstance(export, str) or not _EXPORT.fullmatch(export):
            raise InvalidRunMessage("export missing or not an export name")
        flags = {key: doc.get(key, False) for key in ("dryRun", "full", "force")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise InvalidRunMessage(f"{key} must be true or false")
        continuation = doc.get("continuation", 0)
        if isinstance(continuation, bool) or not isinstance(continuation, int) or continuation < 0:
            raise InvalidRunMessage("continuation must be a whole number >= 0")
        return cls(run_id, export, flags["dryRun"], flags["full"], flags["force"], continuation)
