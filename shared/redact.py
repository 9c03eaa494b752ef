"""Keep personal data and secrets out of logs.

`mask_email` / `hash_email` make an email safe to log; `scrub` removes known secret values,
API-key headers, bearer tokens and email addresses (also percent-encoded, quoted-printable or
escaped, as URLs, mail bodies and reprs carry them) from free text; `RedactingFilter` applies
`scrub` to every log record. Secrets providers call `register_secret_value` with each value they
hand out, so a key is scrubbed even where it appears without a recognisable label.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import traceback
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "THIRD_PARTY_LOGGERS",
    "RedactingFilter",
    "hash_email",
    "install_redaction",
    "mask_email",
    "quiet_third_party_loggers",
    "register_secret_value",
    "scrub",
]

MASK = "***"
# Shorter values would scrub ordinary words and numbers out of every log line.
MIN_SECRET_LENGTH = 8
# Not a secret: it only keeps log hashes from matching public unsalted email-hash lists. Changing it
# breaks correlation with hashes already in the logs.
_HASH_KEY = b"segment-export-activecampaign/log-correlation/v1"

# The `@` as it appears in text: literal, percent-encoded in a URL (`%40`, `%2540` when encoded
# twice), quoted-printable (`=40`), or escaped in JSON / Python reprs (`\u0040`, `\x40`).
_AT = r"(?:@|%(?:25)*40|=40|\\u0040|\\x40)"
# The local part may hold quoted-printable escapes (`=2E`); the top-level domain starts with a letter,
# so `rows=4000.5` is not taken for `rows@00.5`.
_EMAIL_RE = re.compile(
    rf"(?P<local>(?:[A-Za-z0-9._%+'\-]|=[0-9A-F]{{2}})+){_AT}"
    r"(?P<domain>(?:[A-Za-z0-9\-]+\.)+[A-Za-z][A-Za-z0-9\-]*)",
    re.IGNORECASE,
)
# Cheap test whether a text may hold an email at all (most log records do not).
_MAY_HOLD_EMAIL = re.compile(r"@|%(?:25)*40|=40|\\u0040|\\x40", re.IGNORECASE)
# `Api-Token: abc`, `"Api-Token": "abc"`, `api_token=abc` (header dumps, reprs, query strings).
_API_TOKEN_RE = re.compile(r"""(?i)(api[-_]?token["']?\s*[:=]\s*["']?)([^\s"',;&}]+)""")
_BEARER_RE = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9\-._~+/]+=*)")

_lock = threading.Lock()
# Copy-on-write tuple, longest first, so `scrub` reads it without taking the lock and a secret
# containing another one is replaced whole.
_secret_values: tuple[str, ...] = ()


def mask_email(email: str) -> str:
    """`john.doe@example.com` -> `j***@example.com`: enough to recognise, not to identify."""
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return MASK
    if not local:
        return f"{MASK}@{domain}"
    return f"{local[0]}{MASK}@{domain}"


def hash_email(email: str) -> str:
    """A short stable hex id of an email (case and surrounding spaces ignored), to correlate log lines."""
    normalized = email.strip().lower().encode("utf-8")
    return hashlib.blake2b(normalized, key=_HASH_KEY, digest_size=8).hexdigest()


def _spellings(value: str) -> set[str]:
    """`value` as error texts quote it: as is, escaped in a repr (`\x0b`), as bytes (`b'...'`
    contents), percent-encoded (a URL)."""
    return {
        value,
        value.encode("unicode_escape").decode("ascii"),
        repr(value.encode("utf-8"))[2:-1],
        urllib.parse.quote(value, safe=""),
    }


def register_secret_value(value: str) -> None:
    """Remember `value` so that `scrub` (and so every redacted log record) replaces it with `***`,
    in every spelling an error message may quote it in."""
    global _secret_values
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH or value in _secret_values:
        return
    with _lock:
        new = _spellings(value) - set(_secret_values)
        if new:
            _secret_values = tuple(sorted((*_secret_values, *new), key=len, reverse=True))


def _forget_secret_values() -> None:
    """Test hook: start from an empty registry."""
    global _secret_values
    with _lock:
        _secret_values = ()


def scrub(text: str) -> str:
    """Replace registered secrets, Api-Token values and bearer tokens with `***`; mask emails."""
    if not text:
        return text
    for secret in _secret_values:
        if secret in text:
            text = text.replace(secret, MASK)
    # Cheap substring checks first: this runs on every log record and most have none of these.
    lowered = text.lower()
    if "token" in lowered:
        text = _API_TOKEN_RE.sub(rf"\g<1>{MASK}", text)
    if "bearer" in lowered:
        text = _BEARER_RE.sub(rf"\g<1>{MASK}", text)
    if _MAY_HOLD_EMAIL.search(text):
        text = _EMAIL_RE.sub(_mask_match, text)
    return text


def _mask_match(match: re.Match[str]) -> str:
    local = match["local"]
    # `%2B`/`=2B` (an encoded `+`) may open the local part; keep only a plain first character.
    first = local[0] if local[0] not in "%=" else ""
    return f"{first}{MASK}@{match['domain']}"


class RedactingFilter(logging.Filter):
    """Scrubs a record's message (with its args merged in), exception and stack text in place.

    It never drops a record. When the traceback had something to scrub, `exc_info` is removed and the
    scrubbed text kept in `exc_text`: handlers that format `exc_info` themselves would otherwise
    print the original exception message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:
            # Bad format args: logging reports those itself at emit time; still scrub what we have.
            message = f"{record.msg} {record.args!r}"
        record.msg = scrub(message)
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            original = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            scrubbed = scrub(original)
            if scrubbed != original:
                record.exc_info = None
            record.exc_text = scrubbed
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        # Marks the record so the same filter on the logger and on its handlers scrubs it once.
        record.__dict__["_redacted"] = True
        return True


class _RedactingRecordFactory:
    """Wraps the log-record factory so every record is scrubbed the moment it is created.

    Filters on loggers and handlers only see what passes through them, and handlers added later (the
    Functions host's, an exporter's) would be missed; the record factory serves every logger.
    """

    def __init__(self, inner: Callable[..., logging.LogRecord], redactor: RedactingFilter) -> None:
        self.inner = inner
        self.redactor = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        self.redactor.filter(record)
        return record


# Client libraries that log every request line at INFO/DEBUG: httpx/httpcore the ActiveCampaign URLs
# (whose query strings hold emails on contact look-ups), the Azure SDK request and response headers.
THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "azure", "urllib3")


def quiet_third_party_loggers() -> None:
    """Keep the request-logging client libraries at WARNING unless someone chose their level.

    The redaction still applies to whatever they log; this keeps their volume (one line per request)
    and their unfamiliar encodings out of the logs in the first place.
    """
    for name in THIRD_PARTY_LOGGERS:
        library = logging.getLogger(name)
        if library.level == logging.NOTSET:
            library.setLevel(logging.WARNING)


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Scrub every log record at creation (record factory), and add the filter to `logger` (default:
    root) and its handlers as a second line for records made by a custom factory installed later.
    Also quiets the request-logging client libraries (`quiet_third_party_loggers`).

    Idempotent.
    """
    quiet_third_party_loggers()
    target = logging.getLogger() if logger is None else logger
    existing = next((f for f in target.filters if isinstance(f, RedactingFilter)), None)
    redactor = existing or RedactingFilter()
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingRecordFactory):
        logging.setLogRecordFactory(_RedactingRecordFactory(factory, redactor))
    if existing is None:
        target.addFilter(redactor)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(redactor)
    return redactor
