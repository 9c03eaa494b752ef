"""Canary: whole exports with a recognisable API key and planted personal values; neither may leak.

Each scenario runs real exports (Azurite, the sandbox, the pipeline inside the run span) and then
scans every output: log records at DEBUG, including the request lines of httpx and httpcore (turned
up to DEBUG here, the worst case: production keeps them at WARNING), error texts, reports, the
run span with its events and the metrics, and every blob written to app storage (run records,
reports, checkpoints, state). The key may appear nowhere. The planted email, name and phone may
appear only in `rejected.csv` and a run's change log `changes.csv` (the customer's own storage, for
fixing rows and for "who got what", administrators only), and emails also in the
delivered state (`.npz`, which mirror mode needs) and a mirror run's `unsubscribed.csv`.

Scenarios: upsert, mirror with removals and rejoiners (found in pages of the list's unsubscribed
members, or, when that walk fails, looked up by email in a query string), and the failure paths: key refused, server errors, dropped connections, a missing list,
bulk import refusals and error bodies that echo emails, the removal guard, no consent, a missing
secret, a missing column, a data row where model.json promises a header, a time folder without
model.json, a login page instead of JSON, a stop request, a continuation, and an unexpected
exception.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sandbox import Fault, SandboxServer
from shared import telemetry
from shared.pipeline import RunContext, RunOutcome, run_export
from shared.redact import install_redaction
from shared.runs import RunStore
from shared.secrets import EnvSecrets, SecretsProvider
from shared.settings import load_settings
from tests.support.exports import make_config
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

CANARY = "CANARY-7f3a9c51-activecampaign-key-do-not-leak"
# Planted personal values: row 7 is in every snapshot, row 60 leaves and rejoins in mirror mode
# (so it is looked up by email, percent-encoded in a query string), row 40 is the example.
EMAILS = ("person7@example.com", "person40@example.com", "person60@example.com")
NAMES = ("Quillfeather", "Oxenbridge", "Marchbanks")
PHONE = "+15557770777"
PERSONAL = (*EMAILS, *NAMES, PHONE)


def _spellings(value: str) -> set[str]:
    """The value as logs and error texts may carry it: plain, percent-encoded (twice too),
    quoted-printable, escaped."""
    encoded = urllib.parse.quote(value, safe="")
    at_forms = ("%40", "%2540", "=40", "\\u0040", "\\x40")
    return {value, encoded, urllib.parse.quote(encoded, safe="")} | {value.replace("@", f) for f in at_forms}


THIRD_PARTY = ("httpx", "httpcore", "urllib3", "azure")


def _rows(n: int, start: int = 0) -> list[list[str]]:
    rows = profiles(n, start=start)
    for row in rows:
        if row[0] == "7":
            row[2:5] = [NAMES[0], NAMES[1], PHONE]
        if row[0] == "60":
            row[3] = NAMES[2]
    return rows


@dataclass
class Canary:
    sandbox: SandboxServer
    service: BlobServiceClient
    segments: ContainerClient
    ctx: RunContext
    runs: RunStore
    tracer: TracerProvider
    spans: InMemorySpanExporter
    meter: MeterProvider
    metrics: InMemoryMetricReader
    outcomes: list[RunOutcome]

    def configure(self, **options: Any) -> None:
        self.ctx.config = make_config(self.sandbox.hostname, self.segments.container_name, **options)

    def snapshot(self, rows: list[list[str]], time_folder: str = "2026/11/20/0600") -> None:
        write_ci_snapshot(self.segments, "Vip", rows, time_folder=time_folder)

    def run(self, **options: Any) -> RunOutcome:
        """One run as the worker does it: inside the run span, its metrics recorded, its record saved."""
        for blob in self.ctx.app_container().list_blobs(name_starts_with="runs/vip/active"):
            self.ctx.app_container().delete_blob(blob.name)
        flags = {k: options.pop(k) for k in ("dry_run", "full", "force") if k in options}
        record = self.runs.create("vip", trigger="api", **flags)
        record.start()
        try:
            with telemetry.run_span("vip", record.run_id, tracer_provider=self.tracer):
                outcome = run_export(self.ctx, record, runs=self.runs, **options)
        except Exception as exc:  # what functions/worker.py does with an unexpected exception
            logging.getLogger("functions.worker").exception("run %s failed", record.run_id)
            # Unscrubbed on purpose: the run record must scrub what it is given (RunRecord.to_document).
            error = f"attempt 1 failed: {type(exc).__name__}: {exc}"
            record.attempt_errors.append(error)
            record.fail(error)
            self.runs.finish(record)
            raise
        telemetry.record_run_metrics(
            "vip", outcome.report.counts(), 1.0, outcome.status, meter_provider=self.meter
        )
        record.counts = outcome.report.counts()
        if outcome.status == "succeeded":
            record.succeed()
        elif outcome.status == "continue":
            record.wait("continues in a new invocation", continuation=record.continuations + 1)
        else:
            record.fail(outcome.error or "failed")
        if record.active:
            self.runs.update(record)
        else:
            self.runs.finish(record)
        self.outcomes.append(outcome)
        return outcome


@pytest.fixture
def redacted_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """What production does at start (the CLI and the function app call install_redaction), with the
    request-logging libraries then turned up to DEBUG: the scrubber must hold even so."""
    previous = logging.getLogRecordFactory()
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY}
    caplog.set_level(logging.DEBUG)
    install_redaction()
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    logging.setLogRecordFactory(previous)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _canary(azurite: str, unique_name: str, sandbox: SandboxServer, secrets: SecretsProvider) -> Canary:
    service = BlobServiceClient.from_connection_string(azurite)
    segments = service.create_container(unique_name)
    settings = load_settings(
        {
            "AzureWebJobsStorage": azurite,
            "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
            "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "3000",
        }
    )
    config = make_config(sandbox.hostname, unique_name)
    ctx = RunContext(settings, config, secrets, service, service, poll_interval=0.01, confirm_timeout=20)
    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    app = ctx.app_container()
    for prefix in ("runs/vip/", "state/vip/"):
        for blob in app.list_blobs(name_starts_with=prefix):
            app.delete_blob(blob.name)
    return Canary(
        sandbox, service, segments, ctx, RunStore(app), tracer, spans, MeterProvider([metrics]), metrics, []
    )


def _exploding_client(hostname: str, key: str, settings: Any) -> Any:
    """A failure nobody planned for, after the key was read, quoting it and an email."""
    raise RuntimeError(
        f"client for {hostname} with {key!r} broke on {EMAILS[0]} ({EMAILS[0].replace('@', '%40')})"
    )


def _upsert(c: Canary) -> None:
    c.snapshot(_rows(100))
    assert c.run().status == "succeeded"
    c.snapshot(_rows(120), time_folder="2026/11/21/0600")  # changed and new contacts
    assert c.run().status == "succeeded"


def _mirror(c: Canary) -> None:
    c.configure(mode="mirror", maxRemovalShare=0.6)
    c.snapshot(_rows(100))
    assert c.run().status == "succeeded"
    c.snapshot(_rows(50), time_folder="2026/11/21/0600")
    removed = c.run()
    assert removed.report.removed == 50, removed.error
    c.snapshot(_rows(100), time_folder="2026/11/22/0600")
    back = c.run()
    assert back.status == "succeeded", back.error
    assert back.report.resubscribed == 50  # person40 and person60 among them: found in pages


def _guard_trips(c: Canary) -> None:
    c.configure(mode="mirror", maxRemovalShare=0.2)
    c.snapshot(_rows(100))
    assert c.run().status == "succeeded"
    c.snapshot(_rows(30), time_folder="2026/11/21/0600")
    assert c.run().status == "failed"


def _mirror_lookup_errors(c: Canary) -> None:
    c.configure(mode="mirror", maxRemovalShare=0.6)
    c.snapshot(_rows(100))
    assert c.run().status == "succeeded"
    c.snapshot(_rows(50), time_folder="2026/11/21/0600")
    c.run()
    body = {"errors": [{"title": f"Contact {EMAILS[2]} could not be found", "detail": EMAILS[1]}]}
    c.sandbox.inject(Fault.http_status(422, path="/api/3/contacts", count=3, body=body))
    c.snapshot(_rows(100), time_folder="2026/11/22/0600")
    c.run()


def _rejected_key(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.sandbox.set_api_key("another-key-entirely")
    assert c.run().status == "failed"


def _server_errors(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.sandbox.inject(Fault.http_status(500, count=2, path="/api/3/import/bulk_import"))
    c.sandbox.inject(Fault.drop_connection(count=1, path="/api/3/import/info"))
    c.sandbox.inject(Fault.batch_failed(count=1))
    c.run()


def _bulk_refusals(c: Canary) -> None:
    c.snapshot(_rows(100))
    reasons = [{"contact": 0, "failureReason": f"invalid email {EMAILS[0]} for {NAMES[0]} {PHONE}"}]
    c.sandbox.inject(
        Fault.http_status(400, count=1, path="/api/3/import/bulk_import", body={"failureReasons": reasons})
    )
    c.sandbox.inject(
        Fault.http_status(
            422, count=1, path="/api/3/import/bulk_import", body={"message": f"bad {EMAILS[1]}"}
        )
    )
    c.run()


def _missing_list(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.configure(listId=99)
    assert c.run().status == "failed"


def _login_page(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.sandbox.inject(Fault.login_page(count=20))
    assert c.run().status == "failed"


def _no_consent(c: Canary) -> None:
    c.snapshot(_rows(100))
    config = c.ctx.config
    (connection,) = config.connections.values()
    from dataclasses import replace

    c.ctx.config = replace(config, connections={"main": replace(connection, data_privacy_consent=False)})
    assert c.run().status == "failed"


def _missing_secret(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.ctx.secrets = EnvSecrets({})
    assert c.run().status == "failed"


def _missing_column(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.configure(mapping={"email": "EmailAddress", "firstName": "GivenName"})
    assert c.run().status == "failed"


def _data_row_for_a_header(c: Canary) -> None:
    # Issue 12 finding 3: a model.json saying the files have a header, over files that have none,
    # once put the first record's cells (the planted person) into the run error.
    rows = _rows(100)
    rows.insert(0, rows.pop(7))
    c.snapshot(rows)
    model = f"{FOLDER}/model.json"
    doc = json.loads(c.segments.download_blob(model).readall())
    for partition in doc["entities"][0]["partitions"]:
        partition["fileFormatSettings"]["columnHeaders"] = True
    c.segments.upload_blob(model, json.dumps(doc), overwrite=True)
    assert c.run().status == "failed"


def _time_folder_without_model_json(c: Canary) -> None:
    # ... and a time folder whose model.json is not written yet was read as plain CSV.
    rows = _rows(20)
    rows.insert(0, rows.pop(7))
    body = "".join(",".join(f'"{v}"' for v in row) + "\r\n" for row in rows)
    c.segments.upload_blob(f"{FOLDER}/Vip/2026/11/20/0600/Vip_1.csv", body.encode())
    assert c.run().status == "failed"


def _stopped_and_continued(c: Canary) -> None:
    c.snapshot(_rows(1000))
    continued = c.run(deadline=c.ctx.clock() - 1)
    assert continued.status == "continue"  # a checkpoint was written
    c.snapshot(_rows(1000, start=1000) + _rows(100), time_folder="2026/11/21/0600")
    stopped = c.run(should_stop=lambda: f"stop requested for {EMAILS[0]}")
    assert stopped.status == "failed", stopped.error


def _unexpected(c: Canary) -> None:
    c.snapshot(_rows(100))
    c.ctx.client_factory = _exploding_client
    with pytest.raises(RuntimeError):
        c.run()


SCENARIOS: dict[str, Callable[[Canary], None]] = {
    "upsert": _upsert,
    "mirror with removals and rejoiners": _mirror,
    "mirror lookups answered with errors echoing emails": _mirror_lookup_errors,
    "removal guard trips": _guard_trips,
    "key refused": _rejected_key,
    "server errors and dropped connections": _server_errors,
    "bulk import refusals echoing personal data": _bulk_refusals,
    "missing list": _missing_list,
    "login page instead of JSON": _login_page,
    "no consent": _no_consent,
    "missing secret": _missing_secret,
    "missing column": _missing_column,
    "a data row where the header should be": _data_row_for_a_header,
    "a time folder without model.json": _time_folder_without_model_json,
    "stopped, then continued": _stopped_and_continued,
    "unexpected exception": _unexpected,
}


def _telemetry_texts(c: Canary) -> dict[str, str]:
    texts: dict[str, str] = {}
    for i, span in enumerate(c.spans.get_finished_spans()):
        parts = [span.name, repr(dict(span.attributes or {})), span.status.description or ""]
        parts += [f"{e.name} {dict(e.attributes or {})!r}" for e in span.events]
        texts[f"span {i}"] = "\n".join(parts)
    data = c.metrics.get_metrics_data()
    texts["metrics"] = data.to_json() if data is not None else ""
    return texts


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_output_carries_the_key_or_a_personal_value(
    scenario: str, azurite: str, unique_name: str, make_sandbox, redacted_logs: pytest.LogCaptureFixture
) -> None:
    c = _canary(
        azurite, unique_name, make_sandbox(api_key=CANARY), EnvSecrets({"ACTIVECAMPAIGN_KEY": CANARY})
    )
    SCENARIOS[scenario](c)

    assert c.spans.get_finished_spans(), "every run ran inside the run span"
    texts = {
        "errors": "\n".join(o.error or "" for o in c.outcomes),
        "reports": "\n".join(repr(o.report.to_dict()) for o in c.outcomes),
        "logs": "\n".join(redacted_logs.messages) + "\n" + redacted_logs.text,
        **_telemetry_texts(c),
    }
    app = c.ctx.app_container()
    for blob in app.list_blobs():
        if blob.name.startswith(("runs/vip/", "state/vip/")):
            texts[f"blob {blob.name}"] = app.download_blob(blob.name).readall().decode("utf-8", "replace")
    assert any(name.startswith("blob runs/vip/") for name in texts)
    for where, text in texts.items():
        assert CANARY not in text, f"the API key leaked into {where}"
        if where.endswith(("rejected.csv", "changes.csv")):
            continue  # the places rows are kept, in the customer's own storage, for a limited time
        for value in PERSONAL:
            if value in EMAILS and where.endswith((".npz", "unsubscribed.csv")):
                continue  # delivered state and who a mirror run unsubscribed: emails, by design
            for spelling in _spellings(value):
                assert spelling not in text, f"{value!r} leaked into {where} as {spelling!r}"
        assert all(s not in text for s in _spellings(CANARY)), f"the API key leaked into {where}, encoded"


def test_the_scenarios_exercise_what_they_claim(
    azurite: str, unique_name: str, make_sandbox, redacted_logs: pytest.LogCaptureFixture
) -> None:
    """The failing-walk mirror scenario really logs rejoin look-ups by email (so the scan above sees
    encoded emails)."""
    c = _canary(
        azurite, unique_name, make_sandbox(api_key=CANARY), EnvSecrets({"ACTIVECAMPAIGN_KEY": CANARY})
    )
    _mirror_lookup_errors(c)
    lookups = [m for m in redacted_logs.messages if "/contacts?" in m and "email=" in m]
    assert lookups, "httpx logged no contact look-up: the canary would not see encoded emails"
    assert any("p***@example.com" in m for m in lookups)


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
        logger.error("calling with key %s for %s", CANARY, EMAILS[0])
        try:
            raise RuntimeError(f"boom {CANARY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(late)
    output = stream.getvalue()
    assert "calling with key *** for p***@example.com" in output
    assert CANARY not in output
    assert EMAILS[0] not in output
