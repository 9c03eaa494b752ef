"""Redaction: email masking/hashing, scrubbing text, and log records that never carry a secret."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest

from shared.redact import (
    RedactingFilter,
    hash_email,
    install_redaction,
    mask_email,
    register_secret_value,
    scrub,
)

CANARY = "canary-3f9a1c7e5b2d4086a1c3e5f7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7"


@pytest.fixture(autouse=True)
def _registered_canary() -> None:
    register_secret_value(CANARY)


def test_mask_email_keeps_first_letter_and_domain() -> None:
    assert mask_email("john.doe@example.com") == "j***@example.com"
    assert mask_email("  Ann@Example.org ") == "A***@Example.org"
    assert mask_email("@example.com") == "***@example.com"
    assert mask_email("not-an-email") == "***"


def test_hash_email_is_short_stable_and_ignores_case_and_spaces() -> None:
    digest = hash_email("john.doe@example.com")

    assert len(digest) == 16
    int(digest, 16)  # hex
    assert hash_email(" John.Doe@Example.COM ") == digest
    assert hash_email("jane.doe@example.com") != digest
    # Pinned: log correlation across runs and releases depends on the hash never changing.
    assert digest == hash_email("john.doe@example.com") == "3037c21b3060e3c2"


def test_scrub_replaces_registered_secret_values() -> None:
    assert scrub(f"key={CANARY}; again {CANARY}") == "key=***; again ***"


def test_scrub_replaces_api_token_header_values_even_when_unregistered() -> None:
    assert scrub("Api-Token: 9f8e7d6c5b4a") == "Api-Token: ***"
    assert scrub("headers={'Api-Token': '9f8e7d6c5b4a', 'Accept': 'json'}") == (
        "headers={'Api-Token': '***', 'Accept': 'json'}"
    )
    assert (
        scrub("GET /api/3/lists?api_token=9f8e7d6c5b4a&limit=1") == "GET /api/3/lists?api_token=***&limit=1"
    )
    assert scrub("Authorization: Bearer eyJ0eXAi.eyJhdWQi.c2ln") == "Authorization: Bearer ***"


def test_scrub_masks_emails_in_free_text() -> None:
    text = "rejected john.doe@example.com and ANN+vip@mail.example.co.uk (duplicate)"

    assert scrub(text) == "rejected j***@example.com and A***@mail.example.co.uk (duplicate)"


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "exported 250 contacts to list 7 in 1.2s; next batch at 50%"

    assert scrub(text) == text


def test_short_values_are_not_registered_so_ordinary_words_survive() -> None:
    register_secret_value("list")

    assert scrub("list 7") == "list 7"


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO, list[logging.LogRecord]]]:
    """A fresh logger tree with a formatting handler (what a log sink sees) and a record keeper."""
    name = f"redact-test-{uuid.uuid4().hex}"
    parent = logging.getLogger(name)
    parent.setLevel(logging.DEBUG)
    parent.propagate = False
    stream = io.StringIO()
    formatting = logging.StreamHandler(stream)
    formatting.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    records: list[logging.LogRecord] = []

    class Keeper(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    parent.addHandler(formatting)
    parent.addHandler(Keeper())
    install_redaction(parent)
    try:
        # Records come from a child logger, as module loggers do; the handler filters must catch them.
        yield logging.getLogger(f"{name}.shared.pipeline"), stream, records
    finally:
        for handler in list(parent.handlers):
            parent.removeHandler(handler)


def test_logged_secret_never_reaches_the_output_in_message_args_or_traceback(
    logger: tuple[logging.Logger, io.StringIO, list[logging.LogRecord]],
) -> None:
    log, stream, records = logger

    log.info(f"key in message {CANARY}")
    log.info("key in args %s for %s", CANARY, "john.doe@example.com")
    log.warning("key in a dict arg %s", {"Api-Token": CANARY})
    try:
        raise RuntimeError(f"request failed with Api-Token {CANARY}")
    except RuntimeError:
        log.exception("call failed")

    output = stream.getvalue()
    assert CANARY not in output
    assert "john.doe@example.com" not in output
    assert "key in args *** for j***@example.com" in output
    assert "RuntimeError: request failed with Api-Token ***" in output  # the traceback is still there
    # Handlers that read the record's fields directly (not the formatted text) see scrubbed data too.
    for record in records:
        assert CANARY not in repr(record.msg) + repr(record.args) + str(record.exc_text)
        assert record.exc_info is None or CANARY not in str(record.exc_info[1])


def test_exception_without_anything_to_scrub_keeps_exc_info(
    logger: tuple[logging.Logger, io.StringIO, list[logging.LogRecord]],
) -> None:
    log, stream, records = logger
    try:
        raise ValueError("list 7 not found")
    except ValueError:
        log.exception("call failed")

    # Structured exception data (used by telemetry exporters) survives when there was nothing to hide.
    assert records[0].exc_info is not None
    assert "ValueError: list 7 not found" in stream.getvalue()


def test_bad_format_args_do_not_raise_and_are_still_scrubbed(
    logger: tuple[logging.Logger, io.StringIO, list[logging.LogRecord]],
) -> None:
    log, stream, _ = logger

    log.info("two placeholders %s %s", CANARY)

    assert CANARY not in stream.getvalue()
    assert "two placeholders" in stream.getvalue()


def test_install_redaction_is_idempotent() -> None:
    target = logging.getLogger(f"redact-idempotent-{uuid.uuid4().hex}")
    handler = logging.NullHandler()
    target.addHandler(handler)
    try:
        first = install_redaction(target)
        second = install_redaction(target)

        assert first is second
        assert [f for f in target.filters if isinstance(f, RedactingFilter)] == [first]
        assert [f for f in handler.filters if isinstance(f, RedactingFilter)] == [first]
    finally:
        target.removeHandler(handler)


def test_caplog_sees_scrubbed_records_from_the_root_logger(caplog: pytest.LogCaptureFixture) -> None:
    redactor = RedactingFilter()
    caplog.handler.addFilter(redactor)
    try:
        logging.getLogger("shared.activecampaign").warning("403 with key %s", CANARY)
    finally:
        caplog.handler.removeFilter(redactor)

    assert CANARY not in caplog.text
    assert "403 with key ***" in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        'HTTP Request: GET http://127.0.0.1:1/api/3/contacts?email=person40%40example.com "HTTP/1.1 200 OK"',
        "GET /api/3/contacts?email=person40%2540example.com",  # encoded twice
        "To: person40=40example.com",  # quoted-printable
        '{"email": "person40\\u0040example.com"}',  # JSON escape
        "b'person40\\x40example.com'",  # bytes repr
        "person40%40EXAMPLE.COM",
        "user%2Bperson40%40example.com",  # encoded + in the local part
    ],
)
def test_scrub_masks_encoded_emails(text: str) -> None:
    scrubbed = scrub(text)
    assert "person40" not in scrubbed.lower().replace("user%2b", ""), scrubbed
    assert "example.com" in scrubbed.lower()


def test_scrub_leaves_numbers_that_only_look_encoded() -> None:
    text = "rows=4000.5 rate=40123.4/s share=40.0% price=40 EUR"
    assert scrub(text) == text


def test_install_redaction_keeps_request_logging_libraries_below_info() -> None:
    names = ("httpx", "httpcore", "azure", "urllib3")
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET)
    chosen = logging.getLogger("urllib3")
    chosen.setLevel(logging.DEBUG)  # someone chose a level: kept
    factory = logging.getLogRecordFactory()
    try:
        install_redaction()
        for name in ("httpx", "httpcore", "azure"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert chosen.level == logging.DEBUG
    finally:
        logging.setLogRecordFactory(factory)
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)
