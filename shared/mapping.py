"""Pure mapping stage: profile row -> ActiveCampaign contact, or a rejection with a stable reason.

This runs for every row of every segment. Everything that can be resolved once (column indexes,
field ids) is resolved in `RowMapper.__init__`; the local pass checks rows a batch at a time
(`RowMapper.check_batch`: one regex call and a few C-level maps per batch), and `map_row` is a
handful of index lookups and one compiled regex. Email rules are in docs/configuration.md.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import partial
from itertools import chain, compress, count
from operator import and_, itemgetter, not_, or_, truth
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from shared.cdm_types import producer_moment, temporal_type
from shared.config import FieldFormat, FieldMapping
from shared.errors import TerminalError

__all__ = [
    "CHOICE_TYPES",
    "DATETIME_TYPES",
    "DATE_TYPES",
    "DEFAULT_NULL_DATES",
    "DEFAULT_TIME_ZONE",
    "DUPLICATE",
    "FIELD_TOO_LONG",
    "INVALID_EMAIL",
    "INVALID_FIELD_VALUE",
    "MAX_CUSTOM_FIELD_LENGTH",
    "MAX_DOMAIN_LENGTH",
    "MAX_EMAIL_LENGTH",
    "MAX_LOCAL_LENGTH",
    "MAX_STANDARD_FIELD_LENGTH",
    "MISSING_EMAIL",
    "MULTI_TYPES",
    "NOT_AN_OPTION",
    "NOT_A_DATE",
    "NOT_A_DATETIME",
    "NOT_A_NUMBER",
    "NUMBER_TYPES",
    "RAGGED_ROW",
    "REJECTION_REASONS",
    "STANDARD_FIELDS",
    "CheckedBatch",
    "Contact",
    "FieldConverter",
    "FieldInfo",
    "MappingError",
    "Rejection",
    "RowMapper",
    "StandardField",
    "compile_input_format",
    "contact_payload",
    "field_converters",
    "normalize_email",
    "ragged_detail",
    "resolve_fields",
    "values_getter",
]

# Stable rejection reason codes: they appear in run reports and the rejected-rows CSV, so never rename.
MISSING_EMAIL = "missing_email"
INVALID_EMAIL = "invalid_email"
RAGGED_ROW = "ragged_row"  # a record with another number of fields than the segment has columns
FIELD_TOO_LONG = "field_too_long"
DUPLICATE = "duplicate"  # produced by sync.py's dedup
INVALID_FIELD_VALUE = (
    "invalid_field_value"  # a custom field value its type cannot take (onInvalidFieldValue: reject)
)
REJECTION_REASONS: tuple[str, ...] = (
    MISSING_EMAIL,
    INVALID_EMAIL,
    RAGGED_ROW,
    FIELD_TOO_LONG,
    DUPLICATE,
    INVALID_FIELD_VALUE,
)

# Field problem reasons (report.field_problems[perstag][reason]): stable, never rename.
NOT_A_DATE = "not_a_date"
NOT_A_DATETIME = "not_a_datetime"
NOT_AN_OPTION = "not_an_option"
NOT_A_NUMBER = "not_a_number"

MAX_EMAIL_LENGTH = 254
MAX_LOCAL_LENGTH = 64
MAX_DOMAIN_LENGTH = 253
# ActiveCampaign's first name / last name / phone columns (unverified; a common VARCHAR(255)). Longer
# values are rejected here rather than failing or being cut off on ActiveCampaign's side.
MAX_STANDARD_FIELD_LENGTH = 255
# Custom field values: a text column; the cap also keeps one contact far below the 400,000-byte request.
MAX_CUSTOM_FIELD_LENGTH = 65_535


class StandardField(NamedTuple):
    """One of ActiveCampaign's standard contact fields a profile column can be mapped to."""

    role: str  # the configuration's key (FieldMapping's attribute is `attribute`), and the payload role
    attribute: str  # FieldMapping's and Contact's attribute
    payload_key: str  # the key in a `POST /import/bulk_import` contact
    max_length: int = MAX_STANDARD_FIELD_LENGTH


# The standard fields, in the order of Contact's attributes and of a payload's values. The role
# names seed every export's fingerprint: never rename one (a new field goes at the end, with its
# attribute on FieldMapping, Contact, and in the configuration schema).
STANDARD_FIELDS: tuple[StandardField, ...] = (
    StandardField("firstName", "first_name", "first_name"),
    StandardField("lastName", "last_name", "last_name"),
    StandardField("phone", "phone", "phone"),
)

# Atom characters of RFC 5322 minus the apostrophe, which ActiveCampaign's own import documentation
# shows failing ("invalid'character@example.com"). Quoted local parts and IP-literal domains are out.
_ATOM = r"[a-z0-9!#$%&*+/=?^_`{|}~-]++"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Domain labels: 1-63 letters, digits or '-', not starting or ending with '-'. Possessive quantifiers
# and a label written with look-arounds instead of an optional tail: the same language as the plain
# pattern (tests compare them), without backtracking; it runs for every row.
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*+@(?:(?!-)[a-z0-9-]{{1,63}}+(?<!-)\.)++[a-z]{{2,63}}")
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*+")
# normalize_email's whole accepting check as one pattern, to check a batch of addresses in one call:
# the length limits become look-aheads. The patterns take the trimmed address lower-cased, and only
# after str.isascii() held for it (a flag of the string: no pass over it), as normalize_email does:
# some non-ASCII letters lower-case to ASCII (Kelvin sign -> 'k'). Not IGNORECASE on the text as
# read: sre then folds every character it compares, which took most of the local pass's email check
# (lower() on ASCII text is one C pass). Tests check that they accept exactly what normalize_email accepts.
_CHECKED = rf"(?=[^@\n]{{1,{MAX_LOCAL_LENGTH}}}+@)(?=[^\n]{{1,{MAX_EMAIL_LENGTH}}}+(?:\n|\Z)){_EMAIL.pattern}"
_EMAIL_ONE = re.compile(_CHECKED, re.ASCII)
_EMAIL_LINES = re.compile(rf"{_CHECKED}(?:\n{_CHECKED})*+", re.ASCII)  # one per line
_DOMAIN_LABEL = re.compile(_LABEL)


class MappingError(TerminalError, ValueError):
    """The mapping does not fit the segment or the ActiveCampaign account; the message says what to fix."""

    code = "MappingInvalid"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # one of REJECTION_REASONS
    detail: str  # for humans and logs: never contains the email address or other row values


class Contact(NamedTuple):
    """One mapped contact. A NamedTuple, not a frozen dataclass: it is built for every row twice per
    run, and a tuple is constructed in C while a frozen dataclass runs Python code per field."""

    email: str  # normalised
    # One attribute per STANDARD_FIELDS entry, in its order (checked below).
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    fields: tuple[tuple[int, str], ...] = ()  # (custom field id, value), sorted by id


if Contact._fields[1:-1] != tuple(f.attribute for f in STANDARD_FIELDS):  # pragma: no cover
    raise TypeError("Contact's attributes must follow STANDARD_FIELDS")
_STANDARD_KEYS = tuple(f.payload_key for f in STANDARD_FIELDS)


class CheckedBatch(NamedTuple):
    """`RowMapper.check_batch`'s verdict on a batch of rows (indexes are positions in the batch)."""

    accepted: Sequence[int]  # indexes of the rows map_row turns into contacts, ascending
    emails: list[bytes]  # their normalised emails (ASCII), aligned with accepted
    payloads: list[str]  # their `RowMapper.payload_text`, aligned with accepted
    rejected: list[tuple[int, Rejection]]  # (index, why), ascending
    # Empty records (blank lines) are in neither list, as the reader skips them: every other row is in one.


_MISSING = Rejection(MISSING_EMAIL, "the email column is empty")
_UNIT = "\x1f"  # the unit separator, between the values of a payload text
_unit_join = partial(str.join, _UNIT)


_LIMIT = min(
    MAX_CUSTOM_FIELD_LENGTH, *(f.max_length for f in STANDARD_FIELDS)
)  # the lowest limit of any mapped column
# The batch checks compare every standard value with the lowest standard limit; a row over it is
# looked at column by column (_too_long), with each field's own limit.
_STANDARD_LIMIT = min(f.max_length for f in STANDARD_FIELDS)
_lengths = partial(map, len)
_longest = partial(max, default=0)


def ragged_detail(found: int, expected: int) -> str:
    return f"expected {expected} fields, found {found}"


_new_contact = tuple.__new__  # Contact(...) runs a Python-level __new__; this is the C constructor


def _explain_invalid(email: str) -> str:
    """Why a trimmed, ASCII, lower-cased address failed (slow path: only for rejected rows)."""
    if any(ch.isspace() for ch in email):
        return "the address contains whitespace"
    if email.count("@") != 1:
        return "the address must contain exactly one '@'" + (" (found none)" if "@" not in email else "")
    if len(email) > MAX_EMAIL_LENGTH:
        return f"the address is longer than {MAX_EMAIL_LENGTH} characters"
    local, domain = email.split("@")
    if not local:
        return "the part before '@' is empty"
    if len(local) > MAX_LOCAL_LENGTH:
        return f"the part before '@' is longer than {MAX_LOCAL_LENGTH} characters"
    if local.startswith('"'):
        return "quoted local parts are not accepted"
    if not _LOCAL.fullmatch(local):
        if local.startswith(".") or local.endswith(".") or ".." in local:
            return "the part before '@' has a leading, trailing or double dot"
        return "the part before '@' has a character other than letters, digits and .!#$%&*+/=?^_`{|}~-"
    if not domain:
        return "the domain is empty"
    if len(domain) > MAX_DOMAIN_LENGTH:
        return f"the domain is longer than {MAX_DOMAIN_LENGTH} characters"
    labels = domain.split(".")
    if len(labels) < 2:
        return "the domain has no dot (e.g. 'example.com')"
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels[:-1]):
        return (
            "a domain label is empty, longer than 63, has a character other than letters, digits and '-', "
            "or starts or ends with '-'"
        )
    return "the top-level domain must be at least 2 letters"


def normalize_email(raw: str) -> str | Rejection:
    """Trim and lower-case an address; return it, or a Rejection if ActiveCampaign would not accept it.

    Idempotent: a returned address normalises to itself.
    """
    email = raw.strip()
    if not email:
        return _MISSING
    # Checked before lower(): some non-ASCII letters lower-case to ASCII (Kelvin sign -> 'k').
    if not email.isascii():
        return Rejection(INVALID_EMAIL, "the address has non-ASCII characters (ActiveCampaign refuses them)")
    email = email.lower()
    if len(email) <= MAX_EMAIL_LENGTH and _EMAIL.fullmatch(email) and email.index("@") <= MAX_LOCAL_LENGTH:
        return email
    return Rejection(INVALID_EMAIL, _explain_invalid(email))


def _strip_perstag(key: str) -> str:
    return key.strip().strip("%").upper()


def resolve_fields(fields: Mapping[str, str], ac_fields: Iterable[tuple[int, str]]) -> dict[str, int]:
    """Turn the mapping's `fields` (perstag or numeric id -> column) into column -> field id.

    `ac_fields` are (id, perstag) pairs from ActiveCampaign (`GET /fields`). Perstags match with or
    without `%...%` and in any case. Raises MappingError listing every unknown key and what exists.
    """
    by_id: dict[int, str] = {}
    by_tag: dict[str, int] = {}
    for raw_id, perstag in ac_fields:
        by_id[int(raw_id)] = perstag
        by_tag[_strip_perstag(perstag)] = int(raw_id)
    resolved: dict[str, int] = {}
    unknown: list[str] = []
    problems: list[str] = []
    for key, column in fields.items():
        text = key.strip()
        field_id: int | None
        if text.isdigit():
            field_id = int(text) if int(text) in by_id else None
        else:
            field_id = by_tag.get(_strip_perstag(text))
        if field_id is None:
            unknown.append(key)
        elif column in resolved and resolved[column] != field_id:
            problems.append(
                f"column '{column}' is mapped to two custom fields ({by_id[resolved[column]]} and "
                f"{by_id[field_id]}): map each column to one field"
            )
        elif field_id in resolved.values() and resolved.get(column) != field_id:
            problems.append(f"custom field {by_id[field_id]} (id {field_id}) is mapped twice: keep one")
        else:
            resolved[column] = field_id
    if unknown:
        available = ", ".join(f"{tag} (id {fid})" for fid, tag in sorted(by_id.items())) or "none"
        problems.insert(
            0,
            "unknown ActiveCampaign custom field(s): "
            + ", ".join(f"'{key}'" for key in unknown)
            + f"; fields on this account: {available}. "
            + "Create the field in ActiveCampaign or fix the perstag/id",
        )
    if problems:
        raise MappingError("; ".join(problems))
    return resolved


def _find_column(wanted: str, columns: Sequence[str]) -> int | str:
    """The index of `wanted`, allowing a unique case-insensitive match; else why not (a message)."""
    if wanted in columns:
        return columns.index(wanted)
    folded = wanted.strip().casefold()
    matches = [i for i, name in enumerate(columns) if name.strip().casefold() == folded]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(f"'{columns[i]}'" for i in matches)
        return f"'{wanted}' matches several columns ({names}): use the exact name"
    return f"'{wanted}'"


def values_getter(indexes: Sequence[int]) -> Callable[[Sequence[str]], Sequence[str]]:
    """A C-level callable picking these columns' values from a row, always as a sequence."""
    if len(indexes) == 1:  # itemgetter with one index returns the value itself, not a sequence
        return itemgetter(slice(indexes[0], indexes[0] + 1))
    return itemgetter(*indexes) if indexes else itemgetter(slice(0, 0))


# ---------------------------------------------------------------------------------------------
# Custom field types (docs/configuration.md, "Custom field types")
# ---------------------------------------------------------------------------------------------


class FieldInfo(Protocol):
    """A custom field as ActiveCampaign describes it; `shared.activecampaign.CustomField` is one."""

    @property
    def id(self) -> int: ...

    @property
    def perstag(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def options(self) -> tuple[str, ...]: ...


DATE_TYPES = ("date",)
DATETIME_TYPES = ("datetime",)
CHOICE_TYPES = ("dropdown", "radio")  # one of the options
MULTI_TYPES = ("checkbox", "listbox", "multiselect")  # several options, sent as ||a||b||
NUMBER_TYPES = ("number",)
# Every other type (text, textarea, hidden, and any ActiveCampaign adds) is sent as read.

# What Dataverse, .NET (DateTime.MinValue) and Finance & Operations write for "no date": sending them
# as dates would fire date-based automations. fieldFormats.<field>.nullDates replaces the list.
DEFAULT_NULL_DATES = ("0001-01-01", "1900-01-01")
# Customer Insights and Synapse Link write their timestamps in UTC, without an offset.
DEFAULT_TIME_ZONE = "UTC"

_DIRECTIVES = {
    "Y": r"(?P<Y>\d{4})",
    "y": r"(?P<y>\d{2})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "H": r"(?P<H>\d{1,2})",
    "I": r"(?P<I>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
    "f": r"(?P<f>\d{1,6})",
    "p": r"(?P<p>[AaPp]\.?[Mm]\.?)",
    "z": r"(?P<z>Z|[+-]\d{2}:?\d{2})",
}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def compile_input_format(spec: str) -> re.Pattern[str]:
    """A declared input format (``%m/%d/%Y %I:%M:%S %p``) as a pattern with named groups.

    strftime's directives with the meaning Python gives them, without its locale-dependent ones;
    numbers may drop their leading zero (``6/5/2023``), a space matches any run of spaces. Raises
    MappingError for an unknown or repeated directive, or a format without a year, month and day.
    """
    parts: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(spec):
        char = spec[i]
        if char != "%":
            parts.append(r"\s+" if char == " " else re.escape(char))
            i += 1
            continue
        directive = spec[i + 1 : i + 2]
        i += 2
        if directive == "%":
            parts.append("%")
            continue
        if directive not in _DIRECTIVES:
            raise MappingError(
                f"inputFormat {spec!r}: %{directive} is not supported (use %Y %y %m %d %H %I %M %S %f %p %z)"
            )
        if directive in seen:
            raise MappingError(f"inputFormat {spec!r}: %{directive} appears twice")
        seen.add(directive)
        parts.append(_DIRECTIVES[directive])
    if not ({"Y", "y"} & seen and {"m", "d"} <= seen):
        raise MappingError(f"inputFormat {spec!r} needs a year (%Y or %y), a month (%m) and a day (%d)")
    if ("I" in seen) != ("p" in seen):
        raise MappingError(f"inputFormat {spec!r}: %I (12-hour clock) and %p (AM/PM) go together")
    return re.compile("".join(parts), re.IGNORECASE)


def _from_format(pattern: re.Pattern[str], value: str) -> datetime | None:
    match = pattern.fullmatch(value)
    if match is None:
        return None
    g = match.groupdict()
    # %y as strptime reads it: 69-99 are 1969-1999, 00-68 are 2000-2068.
    year = int(g["Y"]) if g.get("Y") else int(g["y"]) + (1900 if int(g["y"]) >= 69 else 2000)
    hour = int(g.get("H") or 0)
    if g.get("I"):
        hour = int(g["I"])
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if g["p"][0] in "Pp" else 0)
    tz: tzinfo | None = None
    if g.get("z"):
        offset = g["z"].replace(":", "")
        if offset in ("Z", "z"):
            tz = UTC
        else:
            minutes = int(offset[1:3]) * 60 + int(offset[3:5])
            if minutes >= 24 * 60:
                return None
            tz = timezone(timedelta(minutes=-minutes if offset[0] == "-" else minutes))
    try:
        return datetime(
            year,
            int(g["m"]),
            int(g["d"]),
            hour,
            int(g.get("M") or 0),
            int(g.get("S") or 0),
            int((g.get("f") or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        return None


def _iso_datetime(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)  # Python 3.11: ISO 8601 with 'Z', offsets, fractions
    except ValueError:
        return None


class FieldConverter:
    """Turns one custom field's values (trimmed, non-empty) into what ActiveCampaign stores for its
    type, or refuses them with a reason. Pure; results are memoised per distinct value, because a
    segment repeats dates, options and numbers on most of its rows."""

    # Distinct values remembered; past this the memo starts over (a field of timestamps repeats none).
    MEMO_SIZE = 1 << 16

    def __init__(self, field: FieldInfo, column: str, fmt: FieldFormat | None = None) -> None:
        kind = field.type
        self.field_id, self.perstag, self.column, self.kind = field.id, field.perstag, column, kind
        fmt = fmt or FieldFormat()
        where = f"custom field {field.perstag or field.id} ({kind or 'no type'})"
        self._pattern = compile_input_format(fmt.input_format) if fmt.input_format else None
        if fmt.input_format and kind not in DATE_TYPES + DATETIME_TYPES:
            raise MappingError(
                f"mapping.fieldFormats: {where} is not a date or datetime field: inputFormat does not apply"
            )
        if fmt.time_zone and kind not in DATETIME_TYPES:
            raise MappingError(
                f"mapping.fieldFormats: {where} is not a datetime field: timeZone applies to datetime fields"
            )
        if fmt.null_dates is not None and kind not in DATE_TYPES + DATETIME_TYPES:
            raise MappingError(
                f"mapping.fieldFormats: {where} is not a date or datetime field: nullDates does not apply"
            )
        if fmt.delimiter and kind not in MULTI_TYPES:
            raise MappingError(
                f"mapping.fieldFormats: {where} holds one value: delimiter applies to checkbox, listbox and multi-select fields"
            )
        if kind in CHOICE_TYPES + MULTI_TYPES and not field.options:
            raise MappingError(
                f"{where} has no options on ActiveCampaign, so no value can be sent to it: add its options "
                "in ActiveCampaign or map another field"
            )
        self._delimiter = fmt.delimiter
        # A value without an offset is a wall-clock time in this zone (zoneinfo: fold 0, see _instant).
        self._zone = ZoneInfo(fmt.time_zone or DEFAULT_TIME_ZONE)
        nulls = DEFAULT_NULL_DATES if fmt.null_dates is None else fmt.null_dates
        self._null_dates = frozenset(date.fromisoformat(text) for text in nulls)
        self._exact = set(field.options)
        folded: dict[str, list[str]] = {}
        for option in field.options:
            folded.setdefault(option.strip().casefold(), []).append(option)
        self._folded = {key: options[0] for key, options in folded.items() if len(options) == 1}
        self._convert: Callable[[str], str | None] = {
            **dict.fromkeys(DATE_TYPES, self._date),
            **dict.fromkeys(DATETIME_TYPES, self._datetime),
            **dict.fromkeys(CHOICE_TYPES, self._choice),
            **dict.fromkeys(MULTI_TYPES, self._multi),
            **dict.fromkeys(NUMBER_TYPES, self._number),
        }.get(kind, str)
        self.typed = self._convert is not str
        self.reason = {
            **dict.fromkeys(DATE_TYPES, NOT_A_DATE),
            **dict.fromkeys(DATETIME_TYPES, NOT_A_DATETIME),
            **dict.fromkeys(CHOICE_TYPES + MULTI_TYPES, NOT_AN_OPTION),
            **dict.fromkeys(NUMBER_TYPES, NOT_A_NUMBER),
        }.get(kind, "")
        spec = f"{kind}\x1f{fmt.input_format or ''}\x1f{fmt.delimiter or ''}\x1f" + "\x1f".join(field.options)
        if kind in DATE_TYPES + DATETIME_TYPES:
            # Zone and "no date" rules change what is sent: part of the signature, so a change resends.
            spec += f"\x1e{self._zone.key}\x1e" + ",".join(sorted(map(str, self._null_dates)))
        # Part of the fingerprint seed: options, type or format changing resends everyone once.
        self.signature = hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()
        self._declared = fmt.input_format
        self._iso_only = kind in DATETIME_TYPES and fmt.input_format is None
        self._source_type: str | None = None  # the column's CDM dataType, see with_source_type
        self._memo: dict[str, str | None] = {}
        self._bad: set[str] = set()  # the memo's keys whose value is None

    def with_source_type(self, declared: object) -> FieldConverter:
        """This converter for a column the folder declares `date`, `dateTime` or `dateTimeOffset`:
        without an inputFormat it also takes the forms those producers write (cdm_types). Any other
        declared type, or a declared inputFormat, leaves it as it is."""
        source = temporal_type(declared)
        if source is None or self._declared or self.kind not in DATE_TYPES + DATETIME_TYPES:
            return self
        typed = copy.copy(self)
        typed._source_type, typed._memo, typed._bad = source, {}, set()
        typed._convert = typed._date if self.kind in DATE_TYPES else typed._datetime  # bound to the copy
        # What is sent for a cell changes: the fingerprint seed must too, so contacts are sent again once.
        typed.signature = hashlib.blake2b(f"{self.signature}\x1f{source}".encode(), digest_size=6).hexdigest()
        return typed

    def convert(self, value: str) -> str | None:
        """The value to send for a cell (trimmed here; "" for an empty one, and for a date that means
        "no date"), or None when the type cannot take it."""
        memo = self._memo
        if value in memo:
            return memo[value]
        if len(memo) >= self.MEMO_SIZE:
            memo.clear()
            self._bad.clear()
        converted = memo[value] = self._uncached(value)
        if converted is None:
            self._bad.add(value)
        return converted

    def _uncached(self, value: str) -> str | None:
        stripped = value.strip()
        return self._convert(stripped) if stripped else ""

    def bad_among(self, values: Iterable[str]) -> set[str]:
        """The distinct cells among `values` (as read; empty ones are fine) that cannot be sent.

        Set operations and C-level maps: only values not seen before are converted one by one.
        """
        if self._iso_only:
            # ISO timestamps rarely repeat, so building the set of distinct cells costs more than it
            # saves: each non-empty cell is parsed by one C-level map instead (converted when sent).
            # A cell fromisoformat takes, convert() sends: it takes no surrounding whitespace, so
            # stripping changes nothing (tests check it). Otherwise on to the memo, cell by cell.
            values = list(values)
            try:
                deque(map(datetime.fromisoformat, filter(None, values)), maxlen=0)
                return set()
            except ValueError:
                pass
        distinct = set(values)
        # difference(), not `- memo.keys()`: given a dict, it looks the set's cells up with the hashes
        # the set holds, where the operator would copy the set and then walk every key of the memo.
        unseen = distinct.difference(self._memo)
        if unseen and self._iso_only:
            try:  # the same check on the cells not remembered, when a remembered one was refused
                deque(map(datetime.fromisoformat, unseen), maxlen=0)
                return distinct & self._bad
            except ValueError:
                pass
        if len(self._memo) + len(unseen) > self.MEMO_SIZE:
            # Start over before, not while, converting: what this batch needs must all be remembered.
            self._memo.clear()
            self._bad.clear()
            unseen = distinct
            if len(distinct) > self.MEMO_SIZE:  # more than it can remember: the memo would start over midway
                return {value for value in distinct if self._uncached(value) is None}
        for value in unseen:
            self.convert(value)
        return distinct & self._bad

    def explain(self) -> str:
        """Why a value was refused, for rejection details and logs: never the value itself."""
        if self.kind in DATE_TYPES + DATETIME_TYPES:
            declared = f" or the declared inputFormat {self._declared!r}" if self._declared else ""
            what = "a date" if self.kind in DATE_TYPES else "a date and time"
            if self._source_type:
                declared += f" or the forms producers write for dataType {self._source_type}"
            return f"not {what} in ISO 8601{declared}"
        if self.kind in CHOICE_TYPES + MULTI_TYPES:
            return f"not one of the field's {len(self._exact)} options"
        return "not a number (digits, an optional sign and decimal point)"

    # -- per type

    def _moment(self, value: str) -> datetime | None:
        if self._pattern is not None:
            found = _from_format(self._pattern, value)
            if found is not None:
                return found
        found = _iso_datetime(value)
        if found is None and self._source_type is not None:
            return producer_moment(value)  # a declared temporal column: its producers' forms too
        return found

    def _date(self, value: str) -> str | None:
        moment = self._moment(value)
        if moment is None:
            return None
        # The date as written (an offset does not move it), four-digit year (strftime's %Y gives "1").
        day = moment.date()
        return "" if day in self._null_dates else day.isoformat()

    def _datetime(self, value: str) -> str | None:
        moment = self._moment(value)
        if moment is None:
            return None
        if moment.date() in self._null_dates:  # "no date", any time part, in whatever zone
            return ""
        return _instant_text(moment if moment.tzinfo is not None else moment.replace(tzinfo=self._zone))

    def _option(self, value: str) -> str | None:
        if value in self._exact:
            return value
        return self._folded.get(value.strip().casefold())

    def _choice(self, value: str) -> str | None:
        return self._option(value)

    def _multi(self, value: str) -> str | None:
        if value.startswith("||") and value.endswith("||") and len(value) > 2:  # already ||a||b||
            parts = value[2:-2].split("||")
        elif self._delimiter is not None:
            parts = value.split(self._delimiter)
        else:
            parts = [value]
        chosen: list[str] = []
        for part in parts:
            if not part.strip():
                continue
            option = self._option(part.strip())
            if option is None:
                return None
            if option not in chosen:
                chosen.append(option)
        return f"||{'||'.join(chosen)}||" if chosen else None

    @staticmethod
    def _number(value: str) -> str | None:
        return value.removeprefix("+") if _NUMBER.fullmatch(value) else None


def _instant_text(moment: datetime) -> str | None:
    """An aware moment as ISO 8601 to the second, always with its offset, so ActiveCampaign (which
    converts date-times into the account's time zone) stores this instant whatever that zone is.

    A wall-clock time read in a zone (`replace(tzinfo=zone)`, fold 0) is what zoneinfo makes of it:
    in a gap (spring forward) the offset before the change applies, so 02:30 that did not exist is
    sent as 02:30 with the winter offset (03:30 summer time); in a fold (fall back) the first of the
    two readings, the summer one. An offset with seconds (local mean time before ~1900) is not ISO
    8601's: such a moment is sent in UTC. None when the moment cannot be written (past year 9999).
    """
    moment = moment.replace(microsecond=0)
    offset = moment.utcoffset()
    if offset is not None and offset % timedelta(minutes=1):
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            return None
    # isoformat always writes four-digit years ("0999-..."), unlike strftime's %Y.
    return moment.isoformat()


def field_converters(
    mapping: FieldMapping, ac_fields: Iterable[FieldInfo], field_ids: Mapping[str, int]
) -> dict[int, FieldConverter]:
    """A converter per mapped custom field whose type needs one (by field id).

    `field_ids` is `resolve_fields`' result (column -> field id). Raises MappingError when a declared
    format does not fit the field's type, or a choice field has no options.
    """
    by_id = {f.id: f for f in ac_fields}
    key_of = {}
    for key in mapping.fields:
        text = key.strip()
        for field in by_id.values():
            if (text.isdigit() and int(text) == field.id) or _strip_perstag(text) == _strip_perstag(
                field.perstag
            ):
                key_of[field.id] = key
    converters: dict[int, FieldConverter] = {}
    problems: list[str] = []
    for column, field_id in field_ids.items():
        field = by_id[field_id]
        try:
            converter = FieldConverter(field, column, mapping.formats.get(key_of.get(field_id, "")))
        except MappingError as exc:
            problems.append(str(exc))
            continue
        if converter.typed:
            converters[field_id] = converter
    if problems:
        raise MappingError("; ".join(problems))
    return converters


class RowMapper:
    """Maps rows of one snapshot (fixed columns) to contacts. Construct once per snapshot."""

    __slots__ = (
        "_custom_values",
        "_email",
        "_email_value",
        "_field_cols",
        "_payload_values",
        "_placeholder",
        "_problems",
        "_reject_invalid",
        "_separators",
        "_standard",
        "_standard_limits",
        "_standard_values",
        "_typed",
        "_typed_values",
        "_width",
    )

    def __init__(
        self,
        mapping: FieldMapping,
        columns: Sequence[str],
        field_ids: Mapping[str, int],
        *,
        converters: Mapping[int, FieldConverter] | None = None,
        reject_invalid: bool = False,
    ) -> None:
        """`converters` (from `field_converters`) convert typed custom fields; a value one refuses
        leaves the field out of the contact and is counted (`field_problems`), or with
        `reject_invalid` rejects the row (`invalid_field_value`)."""
        columns = list(columns)
        wanted: list[tuple[str, str]] = [("email", mapping.email)]
        standard_columns = [getattr(mapping, f.attribute) for f in STANDARD_FIELDS]
        wanted += [
            (f.role, column)
            for f, column in zip(STANDARD_FIELDS, standard_columns, strict=True)
            if column is not None
        ]
        wanted += [(f"fields (id {fid})", column) for column, fid in field_ids.items()]
        indexes: dict[str, int] = {}
        missing: list[str] = []
        for role, column in wanted:
            found = _find_column(column, columns)
            if isinstance(found, int):
                indexes[column] = found
            else:
                missing.append(f"{role} -> {found}")
        if missing:
            raise MappingError(
                "mapped column(s) not in the segment: "
                + "; ".join(missing)
                + ". Columns in the segment: "
                + (", ".join(f"'{c}'" for c in columns) or "none")
            )
        self._width = len(columns)
        self._email = indexes[mapping.email]
        # (index, column) per standard field (STANDARD_FIELDS' order), or None when it is not mapped.
        self._standard: tuple[tuple[int, str] | None, ...] = tuple(
            None if column is None else (indexes[column], column) for column in standard_columns
        )
        self._standard_limits = tuple(
            ((index, column), f.max_length)
            for f, slot in zip(STANDARD_FIELDS, self._standard, strict=True)
            if slot is not None
            for index, column in (slot,)
        )
        self._field_cols: tuple[tuple[int, int, str], ...] = tuple(
            sorted((fid, indexes[column], column) for column, fid in field_ids.items())
        )
        self._payload_values = values_getter([index for _role, index in self.payload_columns])
        self._standard_values = values_getter([slot[0] for slot in self._standard if slot is not None])
        self._custom_values = values_getter([index for _fid, index, _column in self._field_cols])
        self._email_value = itemgetter(self._email)
        self._placeholder = [""] * self._width  # stands in for rows of another width in check_batch
        self._separators = max(len(self.payload_columns) - 1, 0)  # in a payload text, when no value holds one
        converters = converters or {}
        typed = [(converters[fid], index) for fid, index, _column in self._field_cols if fid in converters]
        self._typed = tuple(converter for converter, _index in typed)
        self._typed_values = tuple(itemgetter(index) for _converter, index in typed)
        self._reject_invalid = reject_invalid
        self._problems: dict[tuple[str, str], int] = {}

    @property
    def width(self) -> int:
        return self._width

    @property
    def payload_columns(self) -> tuple[tuple[str, int], ...]:
        """(role, column index) of every mapped column but the email, in a fixed order (the standard
        fields in STANDARD_FIELDS' order, then custom fields by id): the values a contact's payload is
        built from."""
        standard = zip((f.role for f in STANDARD_FIELDS), self._standard, strict=True)
        return tuple((role, slot[0]) for role, slot in standard if slot is not None) + tuple(
            (f"field:{field_id}", index) for field_id, index, _column in self._field_cols
        )

    @property
    def payload_roles(self) -> tuple[str, ...]:
        """The payload columns' roles, typed fields with their converter's signature: what seeds
        the fingerprint along with list and tags."""
        signatures = {f"field:{c.field_id}": f"field:{c.field_id}:{c.signature}" for c in self._typed}
        return tuple(signatures.get(role, role) for role, _index in self.payload_columns)

    def field_problems(self) -> dict[str, dict[str, int]]:
        """Values typed fields refused, by field (perstag, else id) and reason, since the last reset."""
        problems: dict[str, dict[str, int]] = {}
        for (field, reason), n in sorted(self._problems.items()):
            problems.setdefault(field, {})[reason] = n
        return problems

    def reset_field_problems(self) -> None:
        self._problems.clear()

    def payload_text(self, values: Sequence[str]) -> str:
        """The payload columns' values as read, joined with the unit separator (\x1f), in the order of
        `payload_columns`: with the export's list, tags and roles, everything a payload is built from.

        Different values always give different texts: when a value holds the separator itself, the
        values' lengths are appended (such a text has more separators than any other, so it cannot
        equal one without, and the lengths say where each value ends).
        """
        picked = self._payload_values(values)
        text = _unit_join(picked)
        if text.count(_UNIT) == self._separators:
            return text
        return f"{text}\x00{','.join(str(len(value)) for value in picked)}"

    def email_of(self, values: Sequence[str]) -> str | Rejection:
        """The normalised email of the contact `map_row` would build from `values`, or its rejection.

        This is all of `map_row`'s validation (map_row calls it), without building the contact: the
        local pass needs only the email and the verdict, for every row of the segment.
        """
        if len(values) != self._width:
            return Rejection(RAGGED_ROW, ragged_detail(len(values), self._width))
        # normalize_email's accepting path, inlined (a call per row is measurable); any address it
        # does not accept at once goes through normalize_email itself for the Rejection.
        raw = values[self._email].strip()
        email = raw.lower()  # used only if raw is ASCII (see normalize_email)
        if not (
            raw.isascii()
            and len(email) <= MAX_EMAIL_LENGTH
            and _EMAIL.fullmatch(email)
            and email.index("@") <= MAX_LOCAL_LENGTH
        ):
            rejection = normalize_email(raw)
            assert isinstance(rejection, Rejection)  # the same checks, so the same verdict
            return rejection
        # A value within the lowest limit as read is within its own once stripped: only rows with a
        # longer value (hardly any) are looked at column by column.
        if max(map(len, self._payload_values(values)), default=0) > _LIMIT:
            too_long = self._too_long(values)
            if too_long is not None:
                return too_long
        return email

    def check_batch(self, rows: Sequence[list[str]]) -> CheckedBatch:
        """`email_of` for each row of a batch, with each accepted row's `payload_text`, and the typed
        custom fields' values checked (`_check_typed`)."""
        checked = self._check_emails(rows)
        return self._check_typed(rows, checked) if self._typed else checked

    def _check_typed(self, rows: Sequence[list[str]], checked: CheckedBatch) -> CheckedBatch:
        """Count the accepted rows' typed values their field cannot take; reject those rows if asked.

        Per field: set operations over its column (`bad_among`); Python code per row only where a
        batch holds a refused value.
        """
        accepted = checked.accepted
        picked = rows if len(accepted) == len(rows) else [rows[i] for i in accepted]
        refused: dict[int, Rejection] = {}
        for converter, get in zip(self._typed, self._typed_values, strict=True):
            bad = converter.bad_among(map(get, picked))
            if not bad:
                continue
            positions = list(compress(count(), map(bad.__contains__, map(get, picked))))
            key = (converter.perstag or str(converter.field_id), converter.reason)
            self._problems[key] = self._problems.get(key, 0) + len(positions)
            if self._reject_invalid:
                detail = f"custom field {key[0]} (column '{converter.column}', {converter.kind}): {converter.explain()}"
                for position in positions:
                    refused.setdefault(position, Rejection(INVALID_FIELD_VALUE, detail))
        if not refused:
            return checked
        keep = [position not in refused for position in range(len(accepted))]
        rejected = sorted(
            [*checked.rejected, *((accepted[p], why) for p, why in refused.items())], key=itemgetter(0)
        )
        return CheckedBatch(
            list(compress(accepted, keep)),
            list(compress(checked.emails, keep)),
            list(compress(checked.payloads, keep)),
            rejected,
        )

    def _check_emails(self, rows: Sequence[list[str]]) -> CheckedBatch:
        """`email_of` for each row of a batch, with each accepted row's `payload_text`.

        Same verdicts as `email_of` row by row (tests check it), in a handful of C-level passes over
        the batch instead of Python code per row: this is the local pass's inner loop. Rows the batch
        checks do not accept at once (a rejection, or a long payload) go through `email_of` itself.
        Empty records (blank lines) are neither accepted nor rejected.
        """
        width = self._width
        usable = rows
        if len(set(map(len, rows))) > 1 or (rows and len(rows[0]) != width):
            usable = [values if len(values) == width else self._placeholder for values in rows]
        stripped = list(map(str.strip, map(self._email_value, usable)))
        payloads = list(map(_unit_join, map(self._payload_values, usable)))
        if "".join(payloads).count(_UNIT) != self._separators * len(payloads):  # a value holds one
            payloads = list(map(self.payload_text, usable))
        joined = "\n".join(stripped)
        # A payload text within the lowest limit has every value within it; long custom field values
        # are common enough to deserve a look by column group before going row by row.
        if usable is rows and joined.isascii():
            lowered = joined.lower()
            if _EMAIL_LINES.fullmatch(lowered) and (
                max(map(len, payloads), default=0) <= _LIMIT or self._within_limits(rows)
            ):
                emails = lowered.encode("ascii").split(b"\n")
                if len(emails) == len(rows):  # otherwise an address held a line break: one row at a time
                    return CheckedBatch(range(len(rows)), emails, payloads, [])
        # Some row needs a closer look: flag each row with the same checks, then ask email_of about the rest.
        short = list(map(_LIMIT.__ge__, map(len, payloads)))
        if not all(short):
            short = list(map(or_, short, self._each_within_limits(usable)))
        matched = map(truth, map(_EMAIL_ONE.fullmatch, map(str.lower, stripped)))
        good = list(map(and_, map(and_, map(str.isascii, stripped), matched), short))
        rejected: list[tuple[int, Rejection]] = []
        for index in list(compress(count(), map(not_, good))):
            values = rows[index]
            if not values:
                continue
            verdict = self.email_of(values)
            if verdict.__class__ is Rejection:
                rejected.append((index, verdict))
            else:
                # email_of's address is values[email].strip().lower(): the stripped value, lower-cased below.
                good[index] = True
        accepted = "\n".join(compress(stripped, good))
        emails = accepted.lower().encode("ascii").split(b"\n") if accepted else []
        return CheckedBatch(list(compress(count(), good)), emails, list(compress(payloads, good)), rejected)

    def _within_limits(self, rows: Sequence[list[str]]) -> bool:
        """Whether every mapped value of every row is within its column's limit as read (and so
        once stripped too)."""
        standard = chain.from_iterable(map(self._standard_values, rows))
        custom = chain.from_iterable(map(self._custom_values, rows))
        return (
            max(map(len, standard), default=0) <= _STANDARD_LIMIT
            and max(map(len, custom), default=0) <= MAX_CUSTOM_FIELD_LENGTH
        )

    def _each_within_limits(self, rows: Sequence[list[str]]) -> Iterable[bool]:
        """`_within_limits` row by row (C-level maps)."""
        standard = map(_longest, map(_lengths, map(self._standard_values, rows)))
        custom = map(_longest, map(_lengths, map(self._custom_values, rows)))
        return map(and_, map(_STANDARD_LIMIT.__ge__, standard), map(MAX_CUSTOM_FIELD_LENGTH.__ge__, custom))

    def map_row(self, values: Sequence[str]) -> Contact | Rejection:
        email = self.email_of(values)
        if email.__class__ is Rejection:  # cheaper than isinstance, and Rejection has no subclasses
            return email
        # `or None`: "" would blank the value on ActiveCampaign's side, so the key is left out instead.
        standard = [None if slot is None else values[slot[0]].strip() or None for slot in self._standard]
        fields: tuple[tuple[int, str], ...] = ()
        if self._field_cols:
            fields = tuple(
                [
                    (field_id, value)
                    for field_id, index, _column in self._field_cols
                    if (value := values[index].strip())
                ]
            )
            if self._typed:
                fields = self._converted(fields)
        return _new_contact(Contact, (email, *standard, fields))

    def _converted(self, fields: tuple[tuple[int, str], ...]) -> tuple[tuple[int, str], ...]:
        """Typed fields' values as ActiveCampaign stores them; a refused one is left out (it was
        counted, or its row rejected, by check_batch)."""
        by_id = {converter.field_id: converter for converter in self._typed}
        out: list[tuple[int, str]] = []
        for field_id, value in fields:
            converter = by_id.get(field_id)
            sent = value if converter is None else converter.convert(value)
            if sent:  # None: refused; "": a date that means "no date", left out like an empty cell
                out.append((field_id, sent))
        return tuple(out)

    def _too_long(self, values: Sequence[str]) -> Rejection | None:
        """The first mapped column over its limit once stripped (by name and length, never its value)."""
        limits = list(self._standard_limits)
        limits += [((index, column), MAX_CUSTOM_FIELD_LENGTH) for _fid, index, column in self._field_cols]
        for (index, column), limit in limits:
            length = len(values[index].strip())
            if length > limit:
                return Rejection(
                    FIELD_TOO_LONG, f"column '{column}' has {length} characters; at most {limit} are sent"
                )
        return None


def contact_payload(
    contact: Contact,
    *,
    list_id: int,
    tags: Sequence[str] = (),
    unsubscribe: bool = False,
    exclude_automations: bool = False,
) -> dict[str, Any]:
    """One contact of a `POST /import/bulk_import` body, in the documented shape; absent values omitted.

    `exclude_automations` true is also set in the contact, where the reference's example has it (and
    here, so the batch's size is measured with it).

    `listid` is a string because the documented schema types it so (the API also takes numbers).
    """
    payload: dict[str, Any] = {"email": contact.email}
    for key, value in zip(_STANDARD_KEYS, contact[1:-1], strict=True):
        if value is not None:
            payload[key] = value
    if tags:
        payload["tags"] = list(tags)
    if contact.fields:
        payload["fields"] = [{"id": field_id, "value": value} for field_id, value in contact.fields]
    payload["unsubscribe" if unsubscribe else "subscribe"] = [{"listid": str(list_id)}]
    if exclude_automations:
        payload["exclude_automations"] = True
    return payload
