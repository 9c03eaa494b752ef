"""Canary: whole exports with a recognisable API key; the key and raw emails must appear nowhere.

Scans every output a run produces: log records at DEBUG (message, arguments, tracebacks), the
error text, the report, and every blob written to app storage (run records, reports, checkpoints,
state). The rejected-rows CSV is the one place personal data is allowed (the customer's own
storage), so emails are looked for everywhere else, and the key everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from sandbox import Fault, SandboxServer
from shared.pipeline import RunContext, run_export
from shared.redact import install_redaction
from shared.runs import RunStore
from shared.secrets import EnvSecrets
from shared.settings import load_settings
from tests.support.exports import make_config
from tests.support.segments import profiles, write_ci_snapshot

CANARY = "CANARY-7f3a9c51-activecampaign-key-do-not-leak"
EMAIL = "person7@example.com"  # one of the exported profiles


@pytest.fixture
def redacted_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """What production does at start (the CLI and the function app call install_redaction)."""
    previous = logging.getLogRecordFactory()
    caplog.set_level(logging.DEBUG)
    install_redaction()
    yield caplog
    logging.setLogRecordFactory(previous)


def _everything_in_app_storage(service: BlobServiceClient) -> dict[str, bytes]:
    app = service.get_container_client("activecampaign-export")
    return {b.name: app.download_blob(b.name).readall() for b in app.list_blobs()}


@pytest.mark.parametrize("path", ["success", "rejected_key", "server_errors", "missing_list"])
def test_no_output_carries_the_key_or_a_raw_email(
    path: str, azurite: str, unique_name: str, make_sandbox, redacted_logs: pytest.LogCaptureFixture
) -> None:
    sandbox: SandboxServer = make_sandbox(api_key=CANARY)
    service = BlobServiceClient.from_connection_string(azurite)
    write_ci_snapshot(service.create_container(unique_name), "Vip", profiles(300))
    settings = load_settings(
        {
            "AzureWebJobsStorage": azurite,
            "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
            "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "3000",
        }
    )
    config = make_config(sandbox.hostname, unique_name, **({"listId": 99} if path == "missing_list" else {}))
    ctx = RunContext(
        settings, config, EnvSecrets({"ACTIVECAMPAIGN_KEY": CANARY}), service, service, poll_interval=0.01
    )
    if path == "rejected_key":
        sandbox.set_api_key("another-key-entirely")
    if path == "server_errors":
        sandbox.inject(Fault.http_status(500, count=2, path="/api/3/import/bulk_import"))
        sandbox.inject(Fault.drop_connection(count=1, path="/api/3/import/info"))
    runs = RunStore(ctx.app_container())
    for blob in ctx.app_container().list_blobs(name_starts_with="runs/vip/active"):
        ctx.app_container().delete_blob(blob.name)
    record = runs.create("vip", trigger="api")
    record.start()
    outcome = run_export(ctx, record, runs=runs)
    if outcome.status == "succeeded":
        record.succeed()
    else:
        record.fail(outcome.error or "failed")
    runs.update(record)

    assert outcome.status == ("succeeded" if path in ("success", "server_errors") else "failed")
    texts = {
        "error": outcome.error or "",
        "report": repr(outcome.report.to_dict()),
        "logs": "\n".join(redacted_logs.messages) + "\n" + redacted_logs.text,
    }
    for name, data in _everything_in_app_storage(service).items():
        texts[f"blob {name}"] = data.decode("utf-8", "replace")
    assert len(texts) > 3
    for where, text in texts.items():
        assert CANARY not in text, f"the API key leaked into {where}"
        if not where.endswith("rejected.csv") and not where.endswith(".npz"):
            assert EMAIL not in text, f"a raw email leaked into {where}"


def test_handlers_added_after_installation_get_scrubbed_records(
    redacted_logs: pytest.LogCaptureFixture,
) -> None:
    import io

    from shared.redact import register_secret_value

    register_secret_value(CANARY)
    stream = io.StringIO()
    late = logging.StreamHandler(stream)  # e.g. the Functions host's or an exporter's, added later
    logger = logging.getLogger("some.library")
    logger.addHandler(late)
    try:
        logger.error("calling with key %s for %s", CANARY, EMAIL)
        try:
            raise RuntimeError(f"boom {CANARY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(late)
    output = stream.getvalue()
    assert "calling with key *** for p***@example.com" in output
    assert CANARY not in output
    assert EMAIL not in output
