"""Pure checks of a bulk_import body, contact by contact, the way ActiveCampaign refuses them.

One bad contact rejects the whole request, so the checks collect every failure with the
contact's index and the caller answers 400 if there is any.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sandbox.model imports this module
    from sandbox.model import FieldSpec

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
    # The request's exclude_automations, or this contact's own (the reference's example sets it there).
    exclude_automations: bool = False


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


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:?\d{2})?")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_CHOICE = ("dropdown", "radio")
_MULTI = ("checkbox", "listbox", "multiselect")


def field_value_problem(spec: FieldSpec, value: str) -> str | None:
    """Why ActiveCampaign's documented format for this field's type does not hold, or None.

    Stricter than ActiveCampaign, whose behaviour with a value in another format is undocumented
    (sandbox/README.md): the sandbox refuses it, so a client that sends one is caught.
    """
    name = f"Field '{spec.perstag}' ({spec.type})"
    if spec.type == "date":
        try:
            ok = bool(_DATE.fullmatch(value)) and bool(date.fromisoformat(value))
        except ValueError:
            ok = False
        return None if ok else f"{name} must be a date as YYYY-MM-DD"
    if spec.type == "datetime":
        try:
            ok = bool(_DATETIME.fullmatch(value)) and bool(datetime.fromisoformat(value))
        except ValueError:
            ok = False
        return (
            None if ok else f"{name} must be an ISO 8601 date and time (YYYY-MM-DDTHH:MM:SS, optional offset)"
        )
    if spec.type == "number":
        return None if _NUMBER.fullmatch(value) else f"{name} must be a number"
    if spec.type in _CHOICE:
        return None if value in spec.options else f"{name} must be one of its options"
    if spec.type in _MULTI:
        parts = (
            value[2:-2].split("||")
            if value.startswith("||") and value.endswith("||") and len(value) > 4
            else None
        )
        if parts is None:
            return f"{name} takes several values as ||option 1||option 2||"
        return None if all(part in spec.options for part in parts) else f"{name} must hold only its options"
    return None


def stored_field_value(spec: FieldSpec, value: str, zone: tzinfo) -> str:
    """A valid value as the account stores it. A date-time is converted into the account's time zone
    (create-fieldValue's ISO example carries the account's offset, -05:00); one without an offset is
    taken as that zone's local time, as ActiveCampaign does: the sender must send the offset."""
    if spec.type != "datetime":
        return value
    moment = datetime.fromisoformat(value)
    local = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)
    return local.isoformat()


def _check_contact(
    raw: object,
    field_ids: Collection[int],
    list_ids: Collection[int],
    specs: Mapping[int, FieldSpec],
    exclude: bool,
) -> ImportContact | str:
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
        if field_id in specs and (problem := field_value_problem(specs[field_id], value)) is not None:
            return problem
        fields.append((field_id, value))
    own = raw.get("exclude_automations", False)
    if own not in (True, False, 0, 1):
        return "Field 'exclude_automations' must be a boolean"
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
        exclude_automations=exclude or bool(own),
    )


def validate_contacts(
    contacts: list[object],
    *,
    field_ids: Collection[int],
    list_ids: Collection[int],
    fields: Mapping[int, FieldSpec] | None = None,
    exclude_automations: bool = False,
) -> ValidationResult:
    """`fields` (by id) adds the type checks; `exclude_automations` is the request's top-level flag."""
    result = ValidationResult()
    seen: set[str] = set()
    specs = fields or {}
    for index, raw in enumerate(contacts):
        checked = _check_contact(raw, field_ids, list_ids, specs, exclude_automations)
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
