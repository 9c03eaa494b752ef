"""What the app repeats of ActiveCampaign's error texts: a category and positions, never the text.

ActiveCampaign's refusals quote what they refuse ("Contact Jane Doe, +1 415 555 0100, is invalid"),
and those texts went into run records, checkpoints and API errors, where only emails and the key
were scrubbed. A name, a phone number or a street address has no pattern a scrubber can rely on, so
the text is not kept at all: it is reduced to one of a few categories found by keywords, plus the
positions ActiveCampaign gave in its structured fields (a contact's index, a JSON pointer made of
field names and numbers). What the person fixing the problem needs, and nothing about the contact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["UNRECOGNISED", "category", "describe_errors", "pointer", "positions", "reason"]

# First match wins: "Email already exists" is a duplicate, not an invalid email.
_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("rate limit", r"rate.?limit|too many requests"),
        ("permission denied", r"permission|not allowed|forbidden|unauthori[sz]ed"),
        ("duplicate", r"duplicate|already exists|already in use|already taken"),
        ("previously unsubscribed", r"unsubscribed|opted.?out"),
        ("excluded", r"\bexclu"),
        ("not found", r"not found|no result|does not exist|unknown"),
        ("missing value", r"required|missing|blank|empty|cannot be null"),
        ("too long", r"too long|length|exceed|maximum|too large"),
        ("invalid email", r"\be-?mail"),
        ("invalid phone", r"\bphone"),
        ("invalid date", r"\b(?:date|datetime|time)\b"),
        ("invalid tag", r"\btags?\b"),
        ("invalid list", r"\blists?\b"),
        ("invalid field value", r"\b(?:fields?|values?)\b"),
        ("invalid", r"invalid|not valid|malformed|incorrect|bad"),
    )
)
UNRECOGNISED = "unrecognised reason"
# Names a JSON pointer into a request of ours may hold: the keys the client sends, and indexes.
_POINTER_WORDS = frozenset(
    {
        "contact", "contacts", "email", "first_name", "last_name", "firstname", "lastname", "phone",
        "fields", "fieldvalues", "field", "value", "tags", "tag", "subscribe", "unsubscribe", "listid",
        "list", "contactlist", "status", "id", "data", "attributes", "customer_acct_name", "sourceid",
    }
)  # fmt: skip
_NUMBER = re.compile(r"\d{1,7}")
# Positions a text may give: "custom field id 12", "list 7", "field 'email'". A number only counts
# after one of these words, so the digits of a phone number are never kept.
_NUMBERED = re.compile(r"\b(field|list|tag|contact)\s+(?:id\s+)?#?(\d{1,7})\b", re.IGNORECASE)
_NAMED_FIELD = re.compile(r"\bfield\s+'([A-Za-z_]{1,30})'", re.IGNORECASE)


def category(*texts: object) -> str:
    """The category of a refusal, from its texts (title, detail, code, message)."""
    joined = " ".join(t for t in texts if isinstance(t, str))
    for name, pattern in _CATEGORIES:
        if pattern.search(joined):
            return name
    return UNRECOGNISED


def positions(text: object) -> list[str]:
    """The positions a text names (`field 12`, `list 7`, `field email`), in order, without repeats."""
    if not isinstance(text, str):
        return []
    found = [f"{kind.lower()} {number}" for kind, number in _NUMBERED.findall(text)]
    found += [
        f"field {name.lower()}" for name in _NAMED_FIELD.findall(text) if name.lower() in _POINTER_WORDS
    ]
    return list(dict.fromkeys(found))


def reason(text: object) -> str:
    """One refusal text as `category (positions)`: what the app keeps of it."""
    where = positions(text)
    return category(text) + (f" ({', '.join(where)})" if where else "")


def pointer(value: object) -> str | None:
    """A JSON pointer reduced to field names we send and numbers (anything else becomes `*`)."""
    if not isinstance(value, str) or not value.startswith("/"):
        return None
    parts = value[1:].split("/")[:8]
    kept = [p if p.lower() in _POINTER_WORDS or _NUMBER.fullmatch(p) else "*" for p in parts]
    return "/" + "/".join(kept)


def describe_errors(items: Iterable[object]) -> str:
    """A 422's `errors[]` as `category at /pointer; ...` (at most five, then a count)."""
    parts = []
    items = list(items)
    for item in items[:5]:
        if isinstance(item, dict):
            found = category(item.get("code"), item.get("title"), item.get("detail"))
            source = item.get("source")
            where = pointer(source.get("pointer")) if isinstance(source, dict) else None
            named = positions(item.get("title")) + positions(item.get("detail"))
            found += f" ({', '.join(dict.fromkeys(named))})" if named else ""
            parts.append(f"{found} at {where}" if where else found)
        else:
            parts.append(reason(item))
    if len(items) > 5:
        parts.append(f"and {len(items) - 5} more")
    return "; ".join(parts) or UNRECOGNISED
