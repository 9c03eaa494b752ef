"""What an ActiveCampaign API key may look like, checked wherever a key is taken in.

ActiveCampaign issues keys of 72 hex digits. The rule is looser (other deployments, test sandboxes)
but excludes what breaks the HTTP layer or the redaction: control characters and spaces end up in
`Api-Token` header errors that quote the value in escaped forms the log scrubber would not
recognise, and a key shorter than `MIN_LENGTH` is not scrubbed at all (it would mask ordinary words).
"""

from __future__ import annotations

import re

from shared.errors import TerminalError
from shared.redact import MIN_SECRET_LENGTH

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "RULE", "ApiKeyInvalid", "check_api_key"]

MIN_LENGTH = MIN_SECRET_LENGTH
MAX_LENGTH = 256
RULE = f"{MIN_LENGTH}-{MAX_LENGTH} printable ASCII characters without spaces"
_PRINTABLE = re.compile(rf"[\x21-\x7e]{{{MIN_LENGTH},{MAX_LENGTH}}}")


class ApiKeyInvalid(TerminalError, ValueError):
    """The value cannot be an API key. The message never contains the value. A person must store a
    proper key (terminal); a ValueError too, for callers validating input."""

    code = "ApiKeyInvalid"
    http_status = 400


def check_api_key(key: object) -> str:
    """The key with surrounding whitespace removed, or ApiKeyInvalid saying what is wrong."""
    if not isinstance(key, str) or not key.strip():
        raise ApiKeyInvalid(
            "the ActiveCampaign API key is empty: copy it from ActiveCampaign, Settings > Developer"
        )
    key = key.strip()
    if _PRINTABLE.fullmatch(key):
        return key
    if not MIN_LENGTH <= len(key) <= MAX_LENGTH:
        problem = f"is {len(key)} characters long"
    else:
        bad = next(i for i, ch in enumerate(key) if not "\x21" <= ch <= "\x7e")
        problem = f"has a space, control or non-ASCII character at position {bad + 1}"
    raise ApiKeyInvalid(
        f"the ActiveCampaign API key {problem}; a key is {RULE}: copy it again from ActiveCampaign, "
        "Settings > Developer (without line breaks or surrounding text)"
    )
