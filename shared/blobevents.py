"""Refresh events: Event Grid `Microsoft.Storage.BlobCreated` events, and which exports they concern.

Pure functions, no I/O: the queue function (functions/events.py) reads the message, asks here what it
means, and does the storage work. Event Grid (event schema `EventGridSchema`) writes one event per
queue message, a JSON object:

    {"id": "...", "topic": "/subscriptions/.../storageAccounts/<account>",
     "subject": "/blobServices/default/containers/<container>/blobs/<blob path>",
     "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-11-20T06:00:01.1234567Z",
     "data": {"api": "PutBlockList", "url": "https://<account>.blob.core.windows.net/<container>/<path>",
              "eTag": "0x8DB...", "contentLength": 524, "blobType": "BlockBlob", ...},
     "dataVersion": "", "metadataVersion": "1"}

(an array of such events is accepted too). What a blob means for an `onRefresh` export:

- `<folder>/model.json` of its source: Customer Insights wrote a snapshot (model.json comes last);
- a `.csv` under `<folder>/<segment>/` of its source: part of a snapshot being written. In the
  Customer Insights layout the model.json event follows and this one is ignored; in a plain CSV
  folder the snapshot counts as complete once no file was added for CSV_QUIET_SECONDS;
- anything else: unrelated, ignored without touching storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from shared import boundedjson
from shared.config import ExportConfig

__all__ = [
    "BLOB_CREATED",
    "MAX_MESSAGE_BYTES",
    "MODEL_JSON",
    "QUIET_CHECK",
    "BlobCreated",
    "Kind",
    "MalformedEvent",
    "Match",
    "QuietCheck",
    "matches",
    "model_blob",
    "parse_message",
    "parse_quiet_check",
    "same_account",
    "segment_prefix",
]

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
MODEL_JSON = "model.json"
# Event Grid's own limit for one event is 1 MB; a storage queue message is at most 64 KB.
MAX_MESSAGE_BYTES = 64 * 1024
# An event nests a few levels (event -> data -> storageDiagnostics); a batch adds one.
_MAX_DEPTH = 6
_SUBJECT = re.compile(r"/blobServices/default/containers/([^/]+)/blobs/(.+)")
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII: safe to log
# <account>.blob.<suffix>[:port]: the same account's Data Lake endpoint is <account>.dfs.<suffix>.
_BLOB_HOST = re.compile(r"([a-z0-9]+(?:-secondary)?)\.blob\.(.+)")

Kind = Literal["model", "csv"]


class MalformedEvent(ValueError):
    """The message is not a BlobCreated event this app can read; the message says what is wrong."""


@dataclass(frozen=True)
class BlobCreated:
    event_id: str
    event_time: datetime
    container: str
    blob: str  # the blob's name in its container
    url: str  # data.url: which account the blob is in


@dataclass(frozen=True)
class Match:
    """An onRefresh export that the blob belongs to, and how (`model`: snapshot complete)."""

    export: str
    kind: Kind


def parse_message(body: bytes | str) -> tuple[list[BlobCreated], int]:
    """The BlobCreated events of one queue message, and how many other events it held.

    Raises MalformedEvent when the message is not Event Grid JSON or an event lacks what is needed.
    """
    size = len(body.encode("utf-8") if isinstance(body, str) else body)
    if size > MAX_MESSAGE_BYTES:
        raise MalformedEvent(f"message of {size} bytes; an event message is at most {MAX_MESSAGE_BYTES}")
    try:
        doc: Any = boundedjson.loads(body, max_depth=_MAX_DEPTH)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEvent(f"not JSON text ({type(exc).__name__})") from None
    items = doc if isinstance(doc, list) else [doc]
    events: list[BlobCreated] = []
    others = 0
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedEvent(f"event {position}: not a JSON object")
        event_type = item.get("eventType")
        if not isinstance(event_type, str):
            raise MalformedEvent(f"event {position}: no eventType (expected the Event Grid event schema)")
        if event_type != BLOB_CREATED:
            others += 1
            continue
        events.append(_blob_created(position, item))
    return events, others


def _blob_created(position: int, item: dict[str, Any]) -> BlobCreated:
    where = f"event {position}"
    event_id, subject, data = item.get("id"), item.get("subject"), item.get("data")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise MalformedEvent(f"{where}: id missing or not printable text of at most 128 characters")
    match = _SUBJECT.fullmatch(subject) if isinstance(subject, str) else None
    if match is None:
        raise MalformedEvent(
            f"{where} ({event_id}): subject is not /blobServices/default/containers/<container>/blobs/<path>"
        )
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise MalformedEvent(f"{where} ({event_id}): data.url missing")
    url = data["url"]
    if urlsplit(url).scheme not in ("https", "http"):
        raise MalformedEvent(f"{where} ({event_id}): data.url is not an http(s) URL")
    return BlobCreated(
        event_id=event_id,
        event_time=_event_time(where, event_id, item.get("eventTime")),
        container=unquote(match.group(1)),
        blob=unquote(match.group(2)),
        url=url,
    )


def _event_time(where: str, event_id: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise MalformedEvent(f"{where} ({event_id}): eventTime missing")
    # Event Grid writes 7 fractional digits; Python reads at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEvent(f"{where} ({event_id}): eventTime is not an ISO 8601 time") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def same_account(event_url: str, account_url: str) -> bool:
    """Whether the blob of `event_url` is in the storage account whose blob endpoint is `account_url`.

    Compared on scheme-less host and path prefix, so Azurite's `http://127.0.0.1:10000/devstoreaccount1`
    works like `https://<account>.blob.core.windows.net`. A write through the Data Lake API
    (`FlushWithClose`, what ADLS Gen2 producers use) names the same account's `dfs` endpoint in
    `data.url`: `https://<account>.dfs.core.windows.net/<container>/<path>`.
    """
    event, account = urlsplit(event_url), urlsplit(account_url)
    host = account.netloc.lower()
    blob_host = _BLOB_HOST.fullmatch(host)
    hosts = {host, f"{blob_host.group(1)}.dfs.{blob_host.group(2)}"} if blob_host else {host}
    if event.netloc.lower() not in hosts:
        return False
    prefix = account.path.rstrip("/") + "/"
    return event.path.startswith(prefix)


def _folder_prefix(folder: str) -> str:
    return f"{folder}/" if folder else ""


def matches(event: BlobCreated, exports: Iterable[ExportConfig]) -> list[Match]:
    """The enabled onRefresh exports whose source `event`'s blob belongs to."""
    out: list[Match] = []
    for export in exports:
        source = export.source
        if not export.enabled or export.trigger != "onRefresh" or source.container != event.container:
            continue
        prefix = _folder_prefix(source.folder)
        if event.blob == prefix + MODEL_JSON:
            out.append(Match(export.name, "model"))
        elif event.blob.startswith(f"{prefix}{source.segment}/") and event.blob.lower().endswith(".csv"):
            out.append(Match(export.name, "csv"))
    return sorted(out, key=lambda m: m.export)


def model_blob(export: ExportConfig) -> str:
    return _folder_prefix(export.source.folder) + MODEL_JSON


def segment_prefix(export: ExportConfig) -> str:
    return f"{_folder_prefix(export.source.folder)}{export.source.segment}/"


QUIET_CHECK = "csvQuietCheck"


@dataclass(frozen=True)
class QuietCheck:
    """The app's own message on the event queue: look again at a plain CSV folder of `export`."""

    export: str

    def to_json(self) -> str:
        import json

        return json.dumps({QUIET_CHECK: {"export": self.export}})


_EXPORT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def parse_quiet_check(body: bytes | str) -> QuietCheck | None:
    """The quiet check in `body`, or None when it is not one (then it should be an event)."""
    try:
        doc: Any = boundedjson.loads(body, max_depth=2)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or set(doc) != {QUIET_CHECK}:
        return None
    inner = doc[QUIET_CHECK]
    name = inner.get("export") if isinstance(inner, dict) else None
    if not isinstance(name, str) or not _EXPORT_NAME.fullmatch(name):
        raise MalformedEvent(f"{QUIET_CHECK}: export missing or not an export name")
    return QuietCheck(name)
