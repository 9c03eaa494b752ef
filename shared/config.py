"""The configuration document: connections (ActiveCampaign accounts) and exports (segment -> list).

The document is JSON, validated against `schemas/config.schema.json` (the one source of truth for its
shape, also usable by editors) and then cross-checked here (hostnames, connection references). Every
mistake is reported at once, each as `<json path>: <what is wrong and how to fix it>`, because the
people editing it are not the people who wrote the code. See docs/configuration.md.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from shared import boundedjson
from shared.errors import TerminalError
from shared.hosts import HostError, validate_hostname

if TYPE_CHECKING:
    # jsonschema (with referencing and rpds) is imported on the first validation, not with this
    # module: the function app imports it to register routes, and a cold start pays for every import.
    import jsonschema
    from jsonschema.exceptions import ValidationError

__all__ = [
    "DEFAULT_MAX_REJECTED_SHARE",
    "DEFAULT_MAX_REMOVAL_SHARE",
    "DEFAULT_TRIGGER",
    "NAME_RULE",
    "SECRET_PREFIX",
    "Config",
    "ConfigError",
    "Connection",
    "ExportConfig",
    "FeedbackTarget",
    "FieldFormat",
    "FieldMapping",
    "InvalidFieldValue",
    "Mode",
    "SegmentSource",
    "Trigger",
    "config_schema",
    "config_to_document",
    "connection_to_document",
    "export_to_document",
    "format_path",
    "load_config_file",
    "load_config_text",
    "parse_config",
    "parse_connection",
    "parse_export",
]

# onRefresh: run once per new snapshot, as soon as it lands (Event Grid), the timer catching up on a
# lost event; scheduled: at the export's own `schedule` (default EXPORT_SCHEDULE) when there is a
# new snapshot; manual: on demand only.
Trigger = Literal["onRefresh", "scheduled", "manual"]
DEFAULT_TRIGGER: Trigger = "onRefresh"
Mode = Literal["upsert", "mirror"]
InvalidFieldValue = Literal["omit", "reject"]

DEFAULT_MAX_REMOVAL_SHARE = 0.2
# Above this share of rejected records a run fails before sending (docs/configuration.md).
DEFAULT_MAX_REJECTED_SHARE = 0.5
NAME_RULE = "1-63 characters of lower-case letters, digits and '-', starting with a letter or digit"

_PathPart = str | int
# The Key Vault namespace this app owns (SECURITY.md): every apiKeySecret must start with it.
SECRET_PREFIX = "activecampaign-"  # noqa: S105  (a name prefix, not a secret)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_%-]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # same rule as $defs/name in the schema


class ConfigError(TerminalError, ValueError):
    """The document is invalid. `errors` lists every problem, each starting with its JSON path."""

    code = "ValidationFailed"
    http_status = 400

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid configuration:\n" + "\n".join(f"- {e}" for e in self.errors))


@dataclass(frozen=True)
class Connection:
    name: str
    display_name: str
    hostname: str  # normalised by hosts.validate_hostname
    api_key_secret: str  # name of the secret, never the key itself
    allow_contributors: bool = False
    # Without consent the connection may be saved, but the pipeline must send nothing through it.
    data_privacy_consent: bool = False


@dataclass(frozen=True)
class SegmentSource:
    container: str
    folder: str  # "" = the container root; never starts or ends with "/"
    segment: str


@dataclass(frozen=True)
class FieldFormat:
    """How an export's values for one custom field are written (docs/configuration.md, field types)."""

    input_format: str | None = None  # date/datetime fields: strftime-style directives, e.g. "%m/%d/%Y"
    delimiter: str | None = None  # multi-value fields: what separates the values in the cell
    # datetime fields: the IANA zone a value without an offset is read in (None: UTC, which is what
    # Customer Insights and Synapse Link write).
    time_zone: str | None = None
    # date/datetime fields: dates (YYYY-MM-DD) that mean "no date", any time part; None: the default
    # (0001-01-01 and 1900-01-01), () turns it off.
    null_dates: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FieldMapping:
    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # AC perstag or numeric id -> profile column
    tags: tuple[str, ...] = ()
    formats: dict[str, FieldFormat] = field(
        default_factory=dict
    )  # keys of `fields` -> how values are written


@dataclass(frozen=True)
class FeedbackTarget:
    """Where an export's feedback CDM folder goes: a container and folder of the segments' account."""

    container: str
    folder: str
    # Retention: refresh folders older than this many days are deleted (a Full refresh first takes the
    # place of any model.json still lists). None: kept until the customer deletes them.
    keep_days: int | None = None


@dataclass(frozen=True)
class ExportConfig:
    name: str
    connection: str
    source: SegmentSource
    list_id: int
    mapping: FieldMapping
    enabled: bool = True
    trigger: Trigger = DEFAULT_TRIGGER
    # NCRONTAB, only with trigger "scheduled"; None: the app's EXPORT_SCHEDULE.
    schedule: str | None = None
    mode: Mode = "upsert"
    exclude_automations: bool = False
    full_resync_every_days: int | None = None
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE
    max_contacts: int | None = None
    max_rejected_share: float = DEFAULT_MAX_REJECTED_SHARE
    # A custom field value that its field type cannot take: leave the field out (and count it), or reject the row.
    on_invalid_field_value: InvalidFieldValue = "omit"
    # List statuses read back from ActiveCampaign, written as a CDM folder (shared/feedback.py); None: off.
    feedback: FeedbackTarget | None = None
    # NCRONTAB: the feedback folder is also written on this schedule (for exports that rarely run).
    feedback_schedule: str | None = None


@dataclass(frozen=True)
class Config:
    connections: dict[str, Connection] = field(default_factory=dict)
    exports: dict[str, ExportConfig] = field(default_factory=dict)


# --- schema -------------------------------------------------------------------------------------


@cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema of the whole document (also served to the UI/editors)."""
    text = resources.files("shared").joinpath("schemas/config.schema.json").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


def _is_strict_integer(_checker: object, instance: object) -> bool:
    # JSON Schema counts 3.0 as an integer; a list ID or a day count written as 3.0 is a typo.
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator_class() -> Any:
    import jsonschema

    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # untyped in the stubs
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
    )


@cache
def _validator(definition: str | None) -> jsonschema.protocols.Validator:
    schema = config_schema()
    if definition is not None:
        # Validate one item (an HTTP API body) against its definition, reusing the same $defs.
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return cast("jsonschema.protocols.Validator", _validator_class()(schema))


# --- error messages -----------------------------------------------------------------------------


def format_path(parts: Iterable[_PathPart]) -> str:
    """`exports.vip.mapping.tags[0]`; keys that are not plain words are quoted: `fields["a b"]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or "(root)"


def _show(value: object, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return cast(Mapping[str, Any], config_schema()["$defs"][ref.removeprefix("#/$defs/")])
    return schema


def _expect(schema: Mapping[str, Any]) -> str:
    found = schema.get("x-expect") or _resolve(schema).get("x-expect")
    return str(found) if found else "is not valid"


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    options = list(choices)
    for option in options:
        if option.lower() == word.lower():
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _messages(error: ValidationError, prefix: Sequence[_PathPart]) -> Iterator[str]:
    path = [*prefix, *error.absolute_path]
    schema = cast(Mapping[str, Any], error.schema)
    if "propertyNames" in error.relative_schema_path:
        # The instance is the offending key itself, so point at it.
        yield f"{format_path([*path, str(error.instance)])}: invalid name: {_expect(schema)}"
    elif error.validator == "required":
        properties = cast(Mapping[str, Any], schema.get("properties", {}))
        instance = cast(Mapping[str, Any], error.instance)
        for name in cast(list[str], error.validator_value):
            if name in instance:
                continue
            sub = cast(Mapping[str, Any], properties.get(name, {}))
            hint = sub.get("x-required") or f"add it; it {_expect(sub)}"
            yield f"{format_path([*path, name])}: required: {hint}"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(cast(Mapping[str, Any], schema.get("properties", {})))
        for key in error.instance:
            if key in known:
                continue
            guess = _suggest(key, known)
            hint = f"did you mean '{guess}'?" if guess else "known fields: " + ", ".join(known)
            yield f"{format_path([*path, key])}: unknown field ({hint})"
    elif error.validator == "uniqueItems":
        yield f"{format_path(path)}: {_expect(schema)}; remove the repeated entries"
    else:
        yield f"{format_path(path)}: {_expect(schema)}, got {_show(error.instance)}"


def _schema_errors(instance: object, definition: str | None, prefix: Sequence[_PathPart]) -> list[str]:
    errors = sorted(
        _validator(definition).iter_errors(cast(Any, instance)), key=lambda e: [str(p) for p in e.path]
    )
    out: list[str] = []
    for error in errors:
        for message in _messages(error, prefix):
            if message not in out:  # e.g. `pattern` and `not` on the same value say the same thing
                out.append(message)
    return out


def _name_errors(kind: str, name: object) -> list[str]:
    if isinstance(name, str) and _NAME.fullmatch(name):
        return []
    return [f"name: invalid {kind} name {_show(name)}: must be {NAME_RULE}"]


def _hostname_errors(doc: object, path: Sequence[_PathPart], **trust: Any) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("hostname"), str) or not doc["hostname"]:
        return []  # missing or wrong type: already reported by the schema
    try:
        validate_hostname(doc["hostname"], **trust)
    except HostError as exc:
        return [f"{format_path([*path, 'hostname'])}: {exc}"]
    return []


def _schedule_errors(doc: object, path: Sequence[_PathPart]) -> list[str]:
    if not isinstance(doc, dict) or doc.get("schedule") is None:
        return []
    schedule, where = doc["schedule"], format_path([*path, "schedule"])
    if not isinstance(schedule, str):
        return []  # the schema says so
    from shared.schedules import ScheduleError, validate

    trigger = doc.get("trigger", DEFAULT_TRIGGER)
    if trigger != "scheduled":
        return [
            f'{where}: a schedule is only used with "trigger": "scheduled" (this export\'s trigger is '
            f'{_show(trigger)}); remove it or set the trigger to "scheduled"'
        ]
    try:
        validate(schedule)
    except ScheduleError as exc:
        return [f"{where}: {exc}"]
    return []


def _feedback_schedule_errors(doc: object, path: Sequence[_PathPart]) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("feedbackSchedule"), str):
        return []
    from shared.schedules import ScheduleError, validate

    where = format_path([*path, "feedbackSchedule"])
    if doc.get("feedback") is None:
        return [f"{where}: a feedback schedule needs a feedback folder: set 'feedback' or remove it"]
    try:
        validate(doc["feedbackSchedule"])
    except ScheduleError as exc:
        return [f"{where}: {exc}"]
    return []


def _normalised_schedule(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    from shared.schedules import validate

    return validate(value)


def _connection_ref_errors(doc: object, path: Sequence[_PathPart], connections: Collection[str]) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("connection"), str):
        return []
    ref = doc["connection"]
    if ref in connections:
        return []
    where = format_path([*path, "connection"])
    if not connections:
        return [f"{where}: unknown connection '{ref}': none are defined; add one under 'connections' first"]
    guess = _suggest(ref, connections)
    hint = f" (did you mean '{guess}'?)" if guess else ""
    names = ", ".join(sorted(connections))
    return [f"{where}: unknown connection '{ref}'{hint}; defined connections: {names}"]


# --- building the dataclasses (only from documents that passed validation) -----------------------


def _build_connection(name: str, doc: Mapping[str, Any], **trust: Any) -> Connection:
    return Connection(
        name=name,
        display_name=doc["displayName"],
        hostname=validate_hostname(doc["hostname"], **trust),
        api_key_secret=doc["apiKeySecret"],
        allow_contributors=doc.get("allowContributors", False),
        data_privacy_consent=doc.get("dataPrivacyConsent", False),
    )


def _build_export(name: str, doc: Mapping[str, Any]) -> ExportConfig:
    source, mapping = doc["source"], doc["mapping"]
    max_removal_share = doc.get("maxRemovalShare", DEFAULT_MAX_REMOVAL_SHARE)
    return ExportConfig(
        name=name,
        connection=doc["connection"],
        source=SegmentSource(
            container=source["container"],
            folder=source.get("folder", "").rstrip("/"),
            segment=source["segment"],
        ),
        list_id=doc["listId"],
        mapping=FieldMapping(
            email=mapping["email"],
            first_name=mapping.get("firstName"),
            last_name=mapping.get("lastName"),
            phone=mapping.get("phone"),
            fields=dict(mapping.get("fields", {})),
            tags=tuple(mapping.get("tags", ())),
            formats={
                key: FieldFormat(
                    input_format=fmt.get("inputFormat"),
                    delimiter=fmt.get("delimiter"),
                    time_zone=fmt.get("timeZone"),
                    null_dates=None if fmt.get("nullDates") is None else tuple(fmt["nullDates"]),
                )
                for key, fmt in mapping.get("fieldFormats", {}).items()
            },
        ),
        enabled=doc.get("enabled", True),
        trigger=doc.get("trigger", DEFAULT_TRIGGER),
        schedule=_normalised_schedule(doc.get("schedule")),
        mode=doc.get("mode", "upsert"),
        exclude_automations=doc.get("excludeAutomations", False),
        full_resync_every_days=doc.get("fullResyncEveryDays"),
        max_removal_share=float(max_removal_share),
        max_contacts=doc.get("maxContacts"),
        max_rejected_share=float(doc.get("maxRejectedShare", DEFAULT_MAX_REJECTED_SHARE)),
        on_invalid_field_value=doc.get("onInvalidFieldValue", "omit"),
        feedback=(
            FeedbackTarget(
                doc["feedback"]["container"], doc["feedback"]["folder"], doc["feedback"].get("keepDays")
            )
            if doc.get("feedback") is not None
            else None
        ),
        feedback_schedule=_normalised_schedule(doc.get("feedbackSchedule")),
    )


# --- public API ---------------------------------------------------------------------------------


# ActiveCampaign API keys are long hex strings, which are also valid secret names: a key pasted into
# apiKeySecret would sit in plain configuration and be echoed in "secret not found" messages.
_SECRET_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")  # $defs/connection apiKeySecret in the schema
_LOOKS_LIKE_API_KEY = re.compile(r"[0-9a-fA-F]{32,127}")  # longer is already refused as a name


def _field_format_errors(doc: object, path: Sequence[_PathPart]) -> list[str]:
    """Each key of mapping.fieldFormats must be a key of mapping.fields, its timeZone a zone the
    time zone database knows and its nullDates real dates (the schema cannot say so)."""
    mapping = doc.get("mapping") if isinstance(doc, dict) else None
    if not isinstance(mapping, dict) or not isinstance(mapping.get("fieldFormats"), dict):
        return []
    fields = mapping.get("fields")
    fields = fields if isinstance(fields, dict) else {}
    errors = [
        f"{format_path([*path, 'mapping', 'fieldFormats', key])}: not a key of mapping.fields; "
        "give the format under the same perstag or id as the field it describes"
        for key in mapping["fieldFormats"]
        if key not in fields
    ]
    for key, fmt in mapping["fieldFormats"].items():
        if not isinstance(fmt, dict):
            continue
        where = [*path, "mapping", "fieldFormats", key]
        zone = fmt.get("timeZone")
        if isinstance(zone, str) and not _known_zone(zone):
            errors.append(
                f"{format_path([*where, 'timeZone'])}: {_show(zone)} is not a time zone of the IANA "
                "database; use a name such as 'UTC', 'Europe/Madrid' or 'America/New_York'"
            )
        dates = fmt.get("nullDates")
        for i, text in enumerate(dates if isinstance(dates, list) else []):
            if isinstance(text, str) and not _real_date(text):
                errors.append(
                    f"{format_path([*where, 'nullDates', i])}: {_show(text)} is not a calendar date as YYYY-MM-DD"
                )
    return errors


def _known_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _real_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


# Unicode's control characters (category Cc). No name, label, column, tag or path holds one; a NUL or
# an escape sequence in a display name reaches logs, CSV files and terminals that read it otherwise.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _with_control_errors(errors: list[str], doc: object) -> list[str]:
    """`errors` and the control characters of `doc` at paths no error names yet (the schema's own
    patterns already refuse them in some fields, with their own message)."""
    named = {error.split(": ", 1)[0] for error in errors}
    return errors + [e for e in _control_errors(doc, ()) if e.split(": ", 1)[0] not in named]


def _control_errors(doc: object, path: Sequence[_PathPart]) -> list[str]:
    """Every text (keys included) of `doc` holding a control character, by path."""
    if isinstance(doc, str):
        found = _CONTROL.search(doc)
        return (
            [f"{format_path(path)}: holds the control character U+{ord(found.group()):04X}"] if found else []
        )
    errors: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(key, str) and (found := _CONTROL.search(key)):
                errors.append(
                    f"{format_path(path)}: a key holds the control character U+{ord(found.group()):04X}"
                )
            errors += _control_errors(value, [*path, str(key)])
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            errors += _control_errors(value, [*path, i])
    return errors


def _secret_name_errors(doc: object, path: Sequence[_PathPart]) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("apiKeySecret"), str):
        return []
    name = doc["apiKeySecret"]
    where = format_path([*path, "apiKeySecret"])
    if _LOOKS_LIKE_API_KEY.fullmatch(name):
        # The value is not shown: it is probably the key itself.
        return [
            f"{where}: this looks like an API key, not the name of a secret. "
            "Never put the key in the configuration: store it in Key Vault (or send it as apiKey to "
            "PUT /api/connections/{name}) and give the secret's name here, e.g. 'activecampaign-main'"
        ]
    if _SECRET_NAME.fullmatch(name) and not name.startswith(SECRET_PREFIX):  # else the schema says it
        return [
            f"{where}: {_show(name)} must start with '{SECRET_PREFIX}': the app reads, writes and deletes "
            f"only Key Vault secrets named {SECRET_PREFIX}*, so a connection can never reach another "
            f"application's secret in a shared vault; use e.g. '{SECRET_PREFIX}main'"
        ]
    return []


def parse_config(doc: object, *, allowed_suffixes: tuple[str, ...], allow_loopback: bool) -> Config:
    """Validate a whole document (already JSON-decoded) and return it typed. Raises ConfigError."""
    trust: dict[str, Any] = {"allowed_suffixes": allowed_suffixes, "allow_loopback": allow_loopback}
    errors = _with_control_errors(_schema_errors(doc, None, ()), doc)
    if not isinstance(doc, dict):
        raise ConfigError(errors)
    connections = doc.get("connections", {})
    exports = doc.get("exports", {})
    connection_names: list[str] = list(connections) if isinstance(connections, dict) else []
    if isinstance(connections, dict):
        for name, item in connections.items():
            errors += _hostname_errors(item, ("connections", name), **trust)
            errors += _secret_name_errors(item, ("connections", name))
    if isinstance(exports, dict) and isinstance(connections, dict):  # else the schema error says it all
        for name, item in exports.items():
            errors += _connection_ref_errors(item, ("exports", name), connection_names)
            errors += _schedule_errors(item, ("exports", name))
            errors += _feedback_schedule_errors(item, ("exports", name))
            errors += _field_format_errors(item, ("exports", name))
    if errors:
        raise ConfigError(sorted(errors))  # by path, so the problems of one item read together
    return Config(
        connections={name: _build_connection(name, item, **trust) for name, item in connections.items()},
        exports={name: _build_export(name, item) for name, item in exports.items()},
    )


def parse_connection(
    name: str, doc: object, *, allowed_suffixes: tuple[str, ...], allow_loopback: bool
) -> Connection:
    """Validate one connection (an HTTP API body). Error paths start at the item: `hostname: ...`;
    a bad `name` (from the URL) is reported as `name: ...`."""
    trust: dict[str, Any] = {"allowed_suffixes": allowed_suffixes, "allow_loopback": allow_loopback}
    errors = _name_errors("connection", name)
    errors += _with_control_errors(_schema_errors(doc, "connection", ()), doc)
    errors += _hostname_errors(doc, (), **trust)
    errors += _secret_name_errors(doc, ())
    if errors:
        raise ConfigError(errors)
    return _build_connection(name, cast(Mapping[str, Any], doc), **trust)


def parse_export(name: str, doc: object, connections: Collection[str]) -> ExportConfig:
    """Validate one export against the existing connection names (a dict of them works too).

    Error paths start at the item: `mapping.email: required: ...`.
    """
    errors = _name_errors("export", name)
    errors += _with_control_errors(_schema_errors(doc, "export", ()), doc)
    errors += _connection_ref_errors(doc, (), connections)
    errors += _schedule_errors(doc, ())
    errors += _feedback_schedule_errors(doc, ())
    errors += _field_format_errors(doc, ())
    if errors:
        raise ConfigError(errors)
    return _build_export(name, cast(Mapping[str, Any], doc))


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # json.loads would silently keep the last one: a half-edited export would go unnoticed.
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def load_config_text(
    text: str, *, source: str = "config", allowed_suffixes: tuple[str, ...], allow_loopback: bool
) -> Config:
    """Parse a JSON text; syntax errors are reported with line and column."""
    try:
        doc = boundedjson.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"{source}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]
        ) from None
    except boundedjson.TooDeep as exc:
        raise ConfigError([f"{source}: invalid JSON: {exc}"]) from None
    except ValueError as exc:
        raise ConfigError([f"{source}: invalid JSON: {exc}; keep one of them"]) from None
    return parse_config(doc, allowed_suffixes=allowed_suffixes, allow_loopback=allow_loopback)


def load_config_file(path: str | Path, *, allowed_suffixes: tuple[str, ...], allow_loopback: bool) -> Config:
    """Read and parse a configuration file (UTF-8, a byte-order mark from Windows editors is fine)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}): save the file as UTF-8"]) from None
    return load_config_text(
        text, source=str(path), allowed_suffixes=allowed_suffixes, allow_loopback=allow_loopback
    )


def connection_to_document(connection: Connection) -> dict[str, Any]:
    return {
        "displayName": connection.display_name,
        "hostname": connection.hostname,
        "apiKeySecret": connection.api_key_secret,
        "allowContributors": connection.allow_contributors,
        "dataPrivacyConsent": connection.data_privacy_consent,
    }


def export_to_document(export: ExportConfig) -> dict[str, Any]:
    m = export.mapping
    mapping: dict[str, Any] = {"email": m.email}
    optional = (("firstName", m.first_name), ("lastName", m.last_name), ("phone", m.phone))
    mapping.update({key: value for key, value in optional if value is not None})
    mapping["fields"] = dict(m.fields)
    if m.formats:
        mapping["fieldFormats"] = {
            key: {
                name: value
                for name, value in (
                    ("inputFormat", fmt.input_format),
                    ("delimiter", fmt.delimiter),
                    ("timeZone", fmt.time_zone),
                    ("nullDates", None if fmt.null_dates is None else list(fmt.null_dates)),
                )
                if value is not None
            }
            for key, fmt in m.formats.items()
        }
    mapping["tags"] = list(m.tags)
    return {
        "connection": export.connection,
        "source": {
            "container": export.source.container,
            "folder": export.source.folder,
            "segment": export.source.segment,
        },
        "listId": export.list_id,
        "mapping": mapping,
        "enabled": export.enabled,
        "trigger": export.trigger,
        "schedule": export.schedule,
        "mode": export.mode,
        "excludeAutomations": export.exclude_automations,
        "fullResyncEveryDays": export.full_resync_every_days,
        "maxRemovalShare": export.max_removal_share,
        "maxContacts": export.max_contacts,
        "maxRejectedShare": export.max_rejected_share,
        "onInvalidFieldValue": export.on_invalid_field_value,
        "feedback": (
            {
                "container": export.feedback.container,
                "folder": export.feedback.folder,
                "keepDays": export.feedback.keep_days,
            }
            if export.feedback is not None
            else None
        ),
        "feedbackSchedule": export.feedback_schedule,
    }


def config_to_document(config: Config) -> dict[str, Any]:
    """The inverse of parse_config: camelCase JSON with every default written out."""
    return {
        "connections": {name: connection_to_document(c) for name, c in config.connections.items()},
        "exports": {name: export_to_document(e) for name, e in config.exports.items()},
    }
