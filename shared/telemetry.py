"""Traces and metrics of export runs (OpenTelemetry), sent to Application Insights in Azure.

- `configure_telemetry(settings)` turns on the Azure Monitor exporter, and only when
  `APPLICATIONINSIGHTS_CONNECTION_STRING` is set; otherwise it does nothing and every call below is a
  cheap no-op of the OpenTelemetry API. The Azure Monitor distro is imported lazily (it pulls in the
  SDK, exporters and instrumentations) so a cold start without it stays light.
- `run_span(export, run_id)`: one span, the root of its own trace, around one run (or one continuation
  of a run). Its only attributes are the export name and the run id: never an email, a contact, an API
  key or a host name.
- `record_run_metrics(export, counts, duration_s, status)`: counters `contacts_sent`,
  `contacts_rejected`, `contacts_failed` and the histogram `run_duration_seconds`, each with the
  attributes `export` and `status`; for a run that ended, the histograms `run_rejected_share`
  (rejected / rows read) and `run_failed_share` (refused by ActiveCampaign / sent).
- `record_hours_since_success(export, trigger, hours)`: from the timer, for an enabled export whose
  segment has a snapshot it has not exported.
They land in the `customMetrics` table of Application Insights, where the alert rules of
`infra/modules/alerts.bicep` read them; `EMITTED` lists every metric and its attributes, and a test
checks each rule's query against it.

The Application Insights resource deployed by `infra/` has local (key) authentication turned off,
so the exporter authenticates with the app's user-assigned managed identity (`AZURE_CLIENT_ID`).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace

from shared.redact import scrub

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "ATTR_EXPORT",
    "ATTR_RUN_ID",
    "ATTR_STATUS",
    "ATTR_TRIGGER",
    "CONTACT_COUNTERS",
    "DURATION_HISTOGRAM",
    "EMITTED",
    "FAILED_SHARE_HISTOGRAM",
    "HOURS_SINCE_SUCCESS_HISTOGRAM",
    "INSTRUMENTATION_NAME",
    "REJECTED_SHARE_HISTOGRAM",
    "RUN_SPAN_NAME",
    "configure_telemetry",
    "record_hours_since_success",
    "record_run_metrics",
    "record_scrubbed_exception",
    "run_span",
]

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "activecampaign_export"
RUN_SPAN_NAME = "export run"
ATTR_EXPORT = "export"
ATTR_RUN_ID = "run_id"
ATTR_STATUS = "status"
# Key in the run report counts -> name of the counter it feeds.
CONTACT_COUNTERS: Mapping[str, str] = {
    "sent": "contacts_sent",
    "rejected": "contacts_rejected",
    "failed": "contacts_failed",
}
DURATION_HISTOGRAM = "run_duration_seconds"
# Per finished run: rejected rows / rows read, and contacts ActiveCampaign refused / contacts sent.
# Histograms, so Application Insights keeps each export's worst run of an interval (valueMax).
REJECTED_SHARE_HISTOGRAM = "run_rejected_share"
FAILED_SHARE_HISTOGRAM = "run_failed_share"
# Per timer check of an enabled export whose segment has a snapshot it has not exported: hours since
# its last successful delivery (or, never delivered, since that snapshot landed).
HOURS_SINCE_SUCCESS_HISTOGRAM = "export_hours_since_success"
ATTR_TRIGGER = "trigger"
# Every metric the app emits and the attributes (customDimensions) each carries: the alert rules of
# infra/modules/alerts.bicep may read only these (tests/infra/test_infra.py checks each query against this,
# tests/engine/test_alert_telemetry.py checks this against what the code records).
EMITTED: Mapping[str, frozenset[str]] = {
    **{name: frozenset({ATTR_EXPORT, ATTR_STATUS}) for name in CONTACT_COUNTERS.values()},
    DURATION_HISTOGRAM: frozenset({ATTR_EXPORT, ATTR_STATUS}),
    REJECTED_SHARE_HISTOGRAM: frozenset({ATTR_EXPORT, ATTR_STATUS}),
    FAILED_SHARE_HISTOGRAM: frozenset({ATTR_EXPORT, ATTR_STATUS}),
    HOURS_SINCE_SUCCESS_HISTOGRAM: frozenset({ATTR_EXPORT, ATTR_TRIGGER}),
}
# Client libraries whose automatic spans would carry request URLs. ActiveCampaign URLs can hold an
# email address in a query string (contact look-ups): keep them out of telemetry. Azure SDK spans
# (storage, Key Vault) stay on: they name accounts and blobs, never personal data.
_URL_INSTRUMENTATIONS_OFF = ("httpx", "requests", "urllib", "urllib3")

_configured = False


def configure_telemetry(settings: Settings) -> bool:
    """Send traces and metrics to Application Insights when it is configured; returns whether it is.

    Safe to call more than once (later calls do nothing). Logs are not exported from here: the
    Functions host already forwards the worker's logs to Application Insights, and exporting them
    twice would double every line.
    """
    global _configured
    connection_string = settings.appinsights_connection_string
    if not connection_string:
        return False
    if _configured:
        return True
    # Lazy: the distro imports the OpenTelemetry SDK, exporters and instrumentations (~hundreds of ms).
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(
        connection_string=connection_string,
        credential=_credential(settings),
        disable_logging=True,
        instrumentation_options={name: {"enabled": False} for name in _URL_INSTRUMENTATIONS_OFF},
    )
    _configured = True
    return True


def _credential(settings: Settings) -> Any:
    """Entra ID credential for the exporter (Application Insights has local auth disabled in Azure).

    Locally (no managed identity, not on an Azure host) None: the connection string's key is used,
    which works only against a resource that still accepts local authentication.
    """
    if not settings.managed_identity_client_id and not settings.running_in_azure:
        return None
    from azure.identity import ManagedIdentityCredential

    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return ManagedIdentityCredential()


@contextmanager
def run_span(
    export: str, run_id: str, *, tracer_provider: trace.TracerProvider | None = None
) -> Iterator[trace.Span]:
    """One span around one run, as the root of a new trace (linked to the current span, if any).

    An exception escaping the block is recorded on the span and re-raised. Recorded by hand, not by
    OpenTelemetry: its own recording copies `str(exc)` and the traceback (which quotes the exception
    and the code around it) as they are, and exception texts can hold a key or an email. Here the
    message, the stack trace and the status description are scrubbed (`shared.redact.scrub`).
    """
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
    current = trace.get_current_span().get_span_context()
    links = [trace.Link(current)] if current.is_valid else None
    with tracer.start_as_current_span(
        RUN_SPAN_NAME,
        context=otel_context.Context(),  # empty context: a new trace for each run
        kind=trace.SpanKind.INTERNAL,
        attributes={ATTR_EXPORT: export, ATTR_RUN_ID: run_id},
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_scrubbed_exception(span, exc)
            raise


def record_scrubbed_exception(span: trace.Span, exc: BaseException) -> None:
    """What `span.record_exception` records (an `exception` event with the semantic-convention
    attributes) and an error status, with every text scrubbed."""
    message = scrub(str(exc))
    stacktrace = scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    kind = type(exc).__qualname__
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(exc).__module__}.{kind}",
            "exception.message": message,
            "exception.stacktrace": stacktrace,
            "exception.escaped": "True",
        },
    )
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{kind}: {message}"))


class _Instruments(NamedTuple):
    counters: dict[str, metrics.Counter]
    duration: metrics.Histogram
    rejected_share: metrics.Histogram
    failed_share: metrics.Histogram
    hours_since_success: metrics.Histogram


@lru_cache(maxsize=8)
def _instruments(provider: metrics.MeterProvider) -> _Instruments:
    meter = provider.get_meter(INSTRUMENTATION_NAME)
    counters = {
        key: meter.create_counter(name, unit="{contact}", description=f"Contacts {key} by export runs")
        for key, name in CONTACT_COUNTERS.items()
    }
    duration = meter.create_histogram(
        DURATION_HISTOGRAM, unit="s", description="Wall-clock duration of export runs (and continuations)"
    )
    rejected_share = meter.create_histogram(
        REJECTED_SHARE_HISTOGRAM, unit="1", description="Share of the rows read that a run rejected"
    )
    failed_share = meter.create_histogram(
        FAILED_SHARE_HISTOGRAM, unit="1", description="Share of the contacts sent that ActiveCampaign refused"
    )
    hours = meter.create_histogram(
        HOURS_SINCE_SUCCESS_HISTOGRAM,
        unit="h",
        description="Hours an enabled export with an unexported snapshot has gone without a successful run",
    )
    return _Instruments(counters, duration, rejected_share, failed_share, hours)


def record_run_metrics(
    export: str,
    counts: Mapping[str, int],
    duration_s: float,
    status: str,
    *,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Record the counters and the duration of one finished run (or continuation).

    `counts` are the run report's counters; the keys `sent`, `rejected` and `failed` are recorded
    (a missing key counts 0), others are ignored. `status` is the run's outcome: `succeeded`,
    `failed`, `cancelled` (not a failure: the failed-run alert does not count it) or `continue`.
    Telemetry never fails a run: a negative value is logged and skipped.
    """
    instruments = _instruments(meter_provider or metrics.get_meter_provider())
    attributes = {ATTR_EXPORT: export, ATTR_STATUS: status}
    for key, counter in instruments.counters.items():
        value = int(counts.get(key, 0))
        if value < 0:
            log.warning("telemetry: negative %s count %d for export %s skipped", key, value, export)
            continue
        counter.add(value, attributes)
    if duration_s < 0:
        log.warning("telemetry: negative run duration %.3f s for export %s skipped", duration_s, export)
        return
    instruments.duration.record(duration_s, attributes)
    if status == "continue":
        return  # the shares of a run are recorded once, when it ends
    rows, sent = int(counts.get("rowsRead", 0)), int(counts.get("sent", 0))
    if rows > 0:
        instruments.rejected_share.record(max(0, int(counts.get("rejected", 0))) / rows, attributes)
    if sent > 0:
        instruments.failed_share.record(max(0, int(counts.get("failed", 0))) / sent, attributes)


def record_hours_since_success(
    export: str, trigger: str, hours: float, *, meter_provider: metrics.MeterProvider | None = None
) -> None:
    """The timer saw `export` enabled with a snapshot it has not exported, `hours` after its last
    successful delivery: the stale-export alert fires when this passes its threshold."""
    instruments = _instruments(meter_provider or metrics.get_meter_provider())
    instruments.hours_since_success.record(max(0.0, hours), {ATTR_EXPORT: export, ATTR_TRIGGER: trigger})
