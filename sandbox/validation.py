"""Pure checks of a bulk_import body, contact by contact, the way ActiveCampaign refuses them.

One bad contact rejects the whole request, so the checks collect every failure with the
contact's index and the caller answers 400 if there is any.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

# RFC 5322-ish: a dot-atom local part and a domain of LDH labels ending in an alphabetic TLD.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_EMAIL = re.compile(rf"{_LOCAL}@{_DOMAIN}")
_MAX_EMAIL = 254

_TEXT_KEYS = ("first_name", "last_name", "phone", "customer_acct_name")


@dataclass(frozen=True, slots=True)
class ImportContact:
    """One validated contact of a queued batch."""

    email: str  # lower-cased
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    customer_acct_name: str | None = None
    tags: tuple[str, ...] = ()
    fields: tuple[tuple[int, str], ...] = ()
    subscribe: tuple[int, ...] = ()
    unsubscribe: tuple[int, ...] = ()


@dataclass
class ValidationResult:
    contacts: list[ImportContact] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)


def is_valid_email(value: str) -> bool:
    return len(value) <= _MAX_EMAIL and _EMAIL.fullmatch(value) is not None


def _as_id(value: object) -> int | None:
    """ActiveCampaign ids arrive as integers or numeric strings; anything else is no id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _field_value(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _check_contact(raw: object, field_ids: Collection[int], list_ids: Collection[int]) -> ImportContact | str:
    if not isinstance(raw, dict):
        return "Contact must be a JSON object"
    email_raw = raw.get("email")
    if not isinstance(email_raw, str) or not email_raw.strip():
        return "Field 'email' is required"
    email = email_raw.strip().lower()
    if not is_valid_email(email):
        return "Field 'email' incorrect format"
    texts: dict[str, str | None] = {}
    for key in _TEXT_KEYS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            return f"Field '{key}' must be a string"
        texts[key] = value
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return "Field 'tags' must be an array of strings"
    fields: list[tuple[int, str]] = []
    for item in raw.get("fields", []) or []:
        if not isinstance(item, dict):
            return "Field 'fields' must be an array of {id, value}"
        field_id = _as_id(item.get("id"))
        value = _field_value(item.get("value"))
        if field_id is None or value is None:
            return "Each custom field needs a numeric 'id' and a string 'value'"
        if field_id not in field_ids:
            return f"Custom field id {field_id} does not exist"
        fields.append((field_id, value))
    memberships: dict[str, list[int]] = {}
    for key in ("subscribe", "unsubscribe"):
        ids: list[int] = []
        for item in raw.get(key, []) or []:
            list_id = _as_id(item.get("listid")) if isinstance(item, dict) else None
            if list_id is None:
                return f"Field '{key}' must be an array of {{listid}}"
            if list_id not in list_ids:
                return f"List id {list_id} does not exist"
            ids.append(list_id)
        memberships[key] = ids
    return ImportContact(
        email=email,
        first_name=texts["first_name"],
        last_name=texts["last_name"],
        phone=texts["phone"],
        customer_acct_name=texts["customer_acct_name"],
        tags=tuple(tags),
        fields=tuple(fields),
        subscribe=tuple(memberships["subscribe"]),
        unsubscribe=tuple(memberships["unsubscribe"]),
    )


def validate_contacts(
    contacts: list[object], *, field_ids: Collection[int], list_ids: Collection[int]
) -> ValidationResult:
    result = ValidationResult()
    seen: set[str] = set()
    for index, raw in enumerate(contacts):
        checked = _check_contact(raw, field_ids, list_ids)
        if isinstance(checked, str):
            result.failures.append((index, checked))
            continue
        if checked.email in seen:
            result.failures.append(
                (index, f"duplicate: email '{checked.email}' appears twice in the request")
            )
            continue
        seen.add(checked.email)
        result.contacts.append(checked)
    return result
