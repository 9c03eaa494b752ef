"""The configuration document in app storage (`config/config.json` in the app container).

Two levels of optimistic concurrency:
- per item (one connection or export): its ETag is a hash of its content, so an edit of another item
  does not invalidate it. HTTP clients send it back in `If-Match`; a mismatch is `PreconditionFailed`.
- the blob: every write is conditional on the blob ETag read just before. When someone else wrote in
  between, the change is re-applied to the fresh document (re-checking item ETags) and written again.

The document is stored normalised (`config_to_document`: every default written out), so item ETags
do not change when a client omits a default, and whoever reads the blob sees the effective values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shared import boundedjson
from shared.config import Config, ConfigError, config_to_document, parse_config
from shared.errors import TerminalError, TransientError
from shared.storage import CONFIG_BLOB as CONFIG_BLOB
from shared.storage import json_settings

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

__all__ = [
    "CONFIG_BLOB",
    "Change",
    "ConfigSnapshot",
    "ConfigStore",
    "ItemKind",
    "PreconditionFailed",
    "StoredConfigInvalid",
    "check_preconditions",
    "item_etag",
]

ItemKind = Literal["connections", "exports"]
_WRITE_ATTEMPTS = 8


class PreconditionFailed(TransientError):
    code = "PreconditionFailed"
    http_status = 412

    """An `If-Match` / `If-None-Match` condition does not hold; the message says what to do."""


class StoredConfigInvalid(TerminalError):
    """The stored document does not validate (edited by hand?); the message lists what to fix."""

    code = "StoredConfigurationInvalid"
    http_status = 500


def item_etag(item: Any) -> str:
    """A strong ETag (quoted) for one item's JSON document: stable across unrelated edits."""
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def check_preconditions(
    current: Any | None, *, if_match: str | None, if_none_match: str | None, what: str
) -> None:
    """HTTP conditional-request rules for one item (`current` None: it does not exist)."""
    if if_match is not None:
        tags = {tag.strip() for tag in if_match.split(",")}
        if current is None:
            raise PreconditionFailed(
                f"{what} does not exist, so If-Match cannot hold; drop If-Match to create it"
            )
        if "*" not in tags and item_etag(current) not in tags:
            raise PreconditionFailed(
                f"{what} was changed by someone else since you read it (ETag {item_etag(current)}); "
                "GET it again, re-apply your change and send the new ETag in If-Match"
            )
    if if_none_match is not None and current is not None:
        tags = {tag.strip() for tag in if_none_match.split(",")}
        if "*" in tags or item_etag(current) in tags:
            raise PreconditionFailed(f"{what} already exists; drop If-None-Match to replace it")


@dataclass(frozen=True)
class ConfigSnapshot:
    document: dict[str, Any]  # normalised, camelCase; treat as read-only
    config: Config
    blob_etag: str | None  # None: nothing stored yet

    def item(self, kind: ItemKind, name: str) -> dict[str, Any] | None:
        items: dict[str, Any] = self.document[kind]
        found = items.get(name)
        return found if isinstance(found, dict) else None

    def item_etag(self, kind: ItemKind, name: str) -> str | None:
        found = self.item(kind, name)
        return None if found is None else item_etag(found)


Change = Callable[[ConfigSnapshot], dict[str, Any]]


class ConfigStore:
    def __init__(
        self, container: ContainerClient, *, allowed_suffixes: tuple[str, ...], allow_loopback: bool
    ):
        self._container = container
        self._trust: dict[str, Any] = {"allowed_suffixes": allowed_suffixes, "allow_loopback": allow_loopback}

    def read(self) -> ConfigSnapshot:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._container.download_blob(CONFIG_BLOB)
            raw = downloader.readall()
        except ResourceNotFoundError:
            return ConfigSnapshot(
                document={"connections": {}, "exports": {}}, config=Config(), blob_etag=None
            )
        try:
            doc = boundedjson.loads(raw)
        except ValueError as exc:
            raise StoredConfigInvalid(
                f"{CONFIG_BLOB} in the app container is not valid JSON ({exc}); fix or delete the blob"
            ) from None
        try:
            config = parse_config(doc, **self._trust)
        except ConfigError as exc:
            raise StoredConfigInvalid(
                f"{CONFIG_BLOB} in the app container is invalid; fix it: " + "; ".join(exc.errors)
            ) from None
        return ConfigSnapshot(
            document=config_to_document(config), config=config, blob_etag=downloader.properties.etag
        )

    def update(self, change: Change) -> ConfigSnapshot:
        """Apply `change` (snapshot -> new document) and write it; returns the snapshot written.

        `change` may raise (PreconditionFailed, a not-found error, ...): nothing is written then. It is
        called again on a fresh snapshot when another writer got in first, so it must be a pure
        function of its argument. The new document must pass `parse_config` (ConfigError otherwise).
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        for _ in range(_WRITE_ATTEMPTS):
            current = self.read()
            new_doc = change(current)
            config = parse_config(new_doc, **self._trust)
            normalised = config_to_document(config)
            body = json.dumps(normalised, indent=2, ensure_ascii=False)
            blob = self._container.get_blob_client(CONFIG_BLOB)
            try:
                if current.blob_etag is None:
                    result = blob.upload_blob(body, overwrite=False, content_settings=json_settings())
                else:
                    result = blob.upload_blob(
                        body,
                        overwrite=True,
                        content_settings=json_settings(),
                        etag=current.blob_etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # an unrelated edit landed first: re-apply ours on top of it
            return ConfigSnapshot(document=normalised, config=config, blob_etag=result["etag"])
        raise RuntimeError(
            f"could not save {CONFIG_BLOB}: it kept changing under {_WRITE_ATTEMPTS} attempts; try again"
        )
