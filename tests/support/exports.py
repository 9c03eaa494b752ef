"""One export against Azurite and a sandbox: its configuration and a run context, for tests."""

from __future__ import annotations

from typing import Any

from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.config import Config, parse_config
from shared.pipeline import RunContext, RunOutcome, run_export
from shared.runs import RunStore
from shared.secrets import EnvSecrets
from shared.settings import load_settings
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.segments import FOLDER

EXPORT = "vip"


def make_config(hostname: str, container: str, **export_options: object) -> Config:
    """Connection `main` (consent given, key in secret `activecampaign-key`) and export `vip` of segment `Vip` to list 1."""
    doc = {
        "connections": {
            "main": {
                "displayName": "Sandbox",
                "hostname": hostname,
                "apiKeySecret": "activecampaign-key",
                "dataPrivacyConsent": True,
            }
        },
        "exports": {
            EXPORT: {
                "connection": "main",
                "source": {"container": container, "folder": FOLDER, "segment": "Vip"},
                "listId": 1,
                "mapping": {
                    "email": "EmailAddress",
                    "firstName": "FirstName",
                    "lastName": "LastName",
                    "phone": "Phone",
                    "fields": {"LOYALTY_TIER": "LoyaltyTier"},
                    "tags": ["segment-vip"],
                },
                **export_options,
            }
        },
    }
    return parse_config(doc, allowed_suffixes=(".api-us1.com",), allow_loopback=True)


def clear_export(app: ContainerClient, export: str = EXPORT) -> None:
    """Tests share Azurite's one app container: forget this export's state and runs."""
    if not app.exists():
        return
    for prefix in (f"state/{export}/", f"runs/{export}/", f"feedback/{export}/"):
        for blob in app.list_blobs(name_starts_with=prefix):
            app.delete_blob(blob.name)


def make_context(
    azurite: str,
    hostname: str,
    container: str,
    *,
    api_key: str = SANDBOX_API_KEY,
    requests_per_second: int = 150,
    bulk_imports_per_minute: int = 3000,
    config: Config | None = None,
    **context: Any,
) -> RunContext:
    """A run context on Azurite with fast limits and the key in the environment, the export cleared."""
    service = BlobServiceClient.from_connection_string(azurite)
    settings = load_settings(
        {
            "AzureWebJobsStorage": azurite,
            "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": str(requests_per_second),
            "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": str(bulk_imports_per_minute),
        }
    )
    ctx = RunContext(
        settings=settings,
        config=config or make_config(hostname, container),
        secrets=EnvSecrets({"ACTIVECAMPAIGN_KEY": api_key}),
        app_blobs=service,
        segment_blobs=service,
        **{"poll_interval": 0.01, "confirm_timeout": 30, **context},
    )
    clear_export(ctx.app_container())
    return ctx


def run_to_end(ctx: RunContext, export: str = EXPORT, **options: Any) -> RunOutcome:
    """One run of `export` as the CLI runs it: created, started, run, and its record finished (failed
    with the error when the run raises, which is re-raised)."""
    runs = RunStore(ctx.app_container())
    record = runs.create(export, trigger="cli")
    record.start()
    try:
        outcome = run_export(ctx, record, runs=runs, **options)
    except Exception as exc:
        record.fail(str(exc))
        runs.finish(record)
        raise
    if outcome.status == "succeeded":
        record.succeed()
    else:
        record.fail(outcome.error or "failed")
    runs.finish(record)
    return outcome
