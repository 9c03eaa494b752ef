"""ActiveCampaign's wire rules, without an HTTP library: its limits, the exact bytes of a bulk
import, how it spells ids (most as strings: "12"), and the shapes of what it answers.

The client (shared/activecampaign/client.py) sends and receives; shared/discovery.py shapes pages
for people; both read ActiveCampaign's values through these functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.activecampaign.errors import UnexpectedResponse

__all__ = [
    "CHOICE_FIELD_TYPES",
    "CONTACTS_PAGE_SIZE",
    "FIELDS_PAGE_SIZE",
    "MAX_BULK_BODY_BYTES",
    "MAX_BULK_CONTACTS",
    "BulkImportQueued",
    "CustomField",
    "ImportInfo",
    "bulk_import_body",
    "custom_field",
    "int_id",
    "object_in",
    "options_by_field",
    "request_kind",
]


MAX_BULK_CONTACTS = 250


MAX_BULK_BODY_BYTES = 400_000  # ActiveCampaign wants the payload strictly under this


FIELDS_PAGE_SIZE = 100  # the largest page /fields serves


CONTACTS_PAGE_SIZE = 100  # the largest page /contacts serves


# Custom field types whose values must be among the field's options.
CHOICE_FIELD_TYPES = ("dropdown", "radio", "checkbox", "listbox", "multiselect")


@dataclass(frozen=True)
class CustomField:
    """A custom contact field: `type` as ActiveCampaign names it (text, textarea, date, datetime,
    dropdown, radio, checkbox, listbox, hidden, ...; "" when not given) and, for choice fields, the
    option values in ActiveCampaign's order (`fieldOptions` of GET /fields)."""

    id: int
    perstag: str
    title: str
    type: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class BulkImportQueued:
    batch_id: str
    queued: int


@dataclass(frozen=True)
class ImportInfo:
    status: str | None  # None: ActiveCampaign has not registered the batch yet (it answers `false`)
    success: list[int]  # contact ids
    failure: list[str]  # emails: never log them unmasked


@dataclass(frozen=True, slots=True)
class ListStatus:
    """A contact's status on a list as GET /contacts reports it (status filter + the contact object)."""

    contact_id: int
    email: str  # lower-case
    status: int  # the contactList status filtered on: 1 subscribed, 2 unsubscribed, 3 bounced
    updated: str  # the contact's `udate` (ISO 8601 with offset): at or after the status changed
    bounced_hard: int


def bulk_import_body(contacts: list[dict[str, Any]], *, exclude_automations: bool = False) -> bytes:
    """The exact bytes POSTed to /import/bulk_import, checked against ActiveCampaign's limits.

    List ids in subscribe/unsubscribe are sent as strings, as the published schema declares them.
    """
    if not contacts:
        raise ValueError("bulk_import needs at least one contact")
    if len(contacts) > MAX_BULK_CONTACTS:
        raise ValueError(
            f"bulk_import got {len(contacts)} contacts; "
            f"ActiveCampaign accepts at most {MAX_BULK_CONTACTS} per request"
        )
    listed = [_with_string_list_ids(contact) for contact in contacts]
    if exclude_automations:
        # The reference's example sets it in each contact, peers at the top level, and which one
        # ActiveCampaign reads is unverified: both, when true.
        listed = [
            c if c.get("exclude_automations") is True else {**c, "exclude_automations": True} for c in listed
        ]
    payload = {"contacts": listed, "exclude_automations": exclude_automations}
    content = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(content) >= MAX_BULK_BODY_BYTES:
        raise ValueError(
            f"bulk_import body is {len(content):,} bytes; "
            f"ActiveCampaign accepts under {MAX_BULK_BODY_BYTES:,}: "
            "send fewer contacts per request"
        )
    return content


def _with_string_list_ids(contact: dict[str, Any]) -> dict[str, Any]:
    if not any(key in contact for key in ("subscribe", "unsubscribe")):
        return contact
    out = dict(contact)
    for key in ("subscribe", "unsubscribe"):
        if isinstance(out.get(key), list):
            out[key] = [
                {**item, "listid": str(item["listid"])}
                if isinstance(item, dict) and "listid" in item
                else item
                for item in out[key]
            ]
    return out


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def request_kind(method: str, path: str) -> str:
    """A request's kind for counting: `GET /fields/{id}/options` for GET /fields/12/options."""
    return f"{method} {_ID_SEGMENT.sub('/{id}', path)}"


def object_in(body: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise UnexpectedResponse(f"{what} answered without a '{key}' object")
    return value


def custom_field(item: object, options: Mapping[int, list[str]]) -> CustomField:
    if not isinstance(item, dict):
        raise UnexpectedResponse("GET /fields answered with a field that is not an object")
    field_id = int_id(item.get("id"))
    if field_id is None:
        raise UnexpectedResponse("GET /fields answered with a field without a numeric id")
    return CustomField(
        id=field_id,
        perstag=str(item.get("perstag") or ""),
        title=str(item.get("title") or ""),
        type=str(item.get("type") or "").strip().lower(),
        options=tuple(options.get(field_id, ())),
    )


def options_by_field(items: object) -> dict[int, list[str]]:
    """GET /fields' `fieldOptions` (each `{"field": "12", "value": ..., "orderid": ...}`) by field id,
    option values in `orderid` order. Malformed entries are skipped: options only narrow what is sent."""
    if not isinstance(items, list):
        return {}
    found: list[tuple[int, int, str]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            continue
        field_id = int_id(item.get("field"))
        if field_id is not None:
            found.append((field_id, int_id(item.get("orderid")) or 0, item["value"]))
    options: dict[int, list[str]] = {}
    for field_id, _order, value in sorted(found, key=lambda f: (f[0], f[1])):
        options.setdefault(field_id, []).append(value)
    return options


def int_id(value: object) -> int | None:
    # ActiveCampaign sends most ids and counts as strings ("12").
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
