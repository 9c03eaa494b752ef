"""shared/telemetry.py against the OpenTelemetry SDK's in-memory exporter and metric reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared import telemetry
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def meters() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == telemetry.INSTRUMENTATION_NAME
            for metric in scope_metrics.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def _by_export(points: list[Any]) -> dict[tuple[str, str], Any]:
    return {(p.attributes["export"], p.attributes["status"]): p for p in points}


def test_run_span_is_one_root_span_with_only_export_and_run_id(spans):
    provider, exporter = spans
    with telemetry.run_span("vip", "run-1", tracer_provider=provider) as span:
        assert span.is_recording()
    finished = exporter.get_finished_spans()
    assert len(finished) == 1
    (span_data,) = finished
    assert span_data.name == telemetry.RUN_SPAN_NAME
    assert span_data.parent is None
    assert dict(span_data.attributes or {}) == {"export": "vip", "run_id": "run-1"}
    assert span_data.status.status_code == StatusCode.UNSET


def test_each_run_starts_its_own_trace_linked_to_the_caller(spans):
    provider, exporter = spans
    tracer = provider.get_tracer("caller")
    with tracer.start_as_current_span("invocation") as outer:
        with telemetry.run_span("vip", "run-1", tracer_provider=provider):
            pass
        with telemetry.run_span("vip", "run-2", tracer_provider=provider):
            pass
    by_name: dict[str, list[Any]] = {}
    for s in exporter.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    runs = by_name[telemetry.RUN_SPAN_NAME]
    assert len(runs) == 2
    outer_ctx = outer.get_span_context()
    trace_ids = {s.context.trace_id for s in runs}
    assert len(trace_ids) == 2
    assert outer_ctx.trace_id not in trace_ids
    for s in runs:
        assert s.parent is None
        assert [link.context.span_id for link in s.links] == [outer_ctx.span_id]


def test_an_exception_marks_the_span_failed_and_propagates(spans):
    provider, exporter = spans
    with (
        pytest.raises(RuntimeError, match="boom"),
        telemetry.run_span("vip", "run-9", tracer_provider=provider),
    ):
        raise RuntimeError("boom")
    (span_data,) = exporter.get_finished_spans()
    assert span_data.status.status_code == StatusCode.ERROR
    assert [e.name for e in span_data.events] == ["exception"]


def test_record_run_metrics_counts_and_duration(meters):
    provider, reader = meters
    telemetry.record_run_metrics(
        "vip",
        {"sent": 120, "rejected": 3, "failed": 2, "skipped": 7},
        12.5,
        "succeeded",
        meter_provider=provider,
    )
    telemetry.record_run_metrics("vip", {"sent": 30}, 2.5, "succeeded", meter_provider=provider)
    telemetry.record_run_metrics("other", {"failed": 5}, 1.0, "failed", meter_provider=provider)

    points = _points(reader)
    # (plus the shares of the runs that ended: tests/engine/test_alert_telemetry.py)
    assert set(points) - {"run_rejected_share", "run_failed_share"} == {
        "contacts_sent",
        "contacts_rejected",
        "contacts_failed",
        "run_duration_seconds",
    }

    sent = _by_export(points["contacts_sent"])
    assert all(isinstance(p, NumberDataPoint) for p in sent.values())
    assert sent[("vip", "succeeded")].value == 150
    assert sent[("other", "failed")].value == 0
    assert _by_export(points["contacts_rejected"])[("vip", "succeeded")].value == 3
    failed = _by_export(points["contacts_failed"])
    assert failed[("vip", "succeeded")].value == 2
    assert failed[("other", "failed")].value == 5

    durations = _by_export(points["run_duration_seconds"])
    vip = durations[("vip", "succeeded")]
    assert isinstance(vip, HistogramDataPoint)
    assert vip.count == 2
    assert vip.sum == pytest.approx(15.0)
    assert durations[("other", "failed")].count == 1
    # Nothing but the export name and the status as attributes: no personal data, no run ids.
    for name_points in points.values():
        for p in name_points:
            assert set(p.attributes) == {"export", "status"}


def test_negative_values_are_skipped_not_raised(meters):
    provider, reader = meters
    telemetry.record_run_metrics("vip", {"sent": -1, "failed": 1}, -3.0, "failed", meter_provider=provider)
    points = _points(reader)
    assert "contacts_sent" not in points
    assert _by_export(points["contacts_failed"])[("vip", "failed")].value == 1
    assert "run_duration_seconds" not in points


def test_without_configuration_the_api_calls_are_harmless_no_ops():
    with telemetry.run_span("vip", "run-1") as span:
        span.set_attribute("ignored", True)
    telemetry.record_run_metrics("vip", {"sent": 1}, 0.1, "succeeded")


def test_configure_does_nothing_without_a_connection_string(monkeypatch):
    import azure.monitor.opentelemetry as distro

    def fail(**_kwargs: Any) -> None:
        raise AssertionError("configure_azure_monitor must not be called")

    monkeypatch.setattr(distro, "configure_azure_monitor", fail)
    monkeypatch.setattr(telemetry, "_configured", False)
    assert telemetry.configure_telemetry(Settings(storage=None, segments_storage=None)) is False


def test_configure_uses_the_managed_identity_and_keeps_urls_out(monkeypatch):
    import azure.monitor.opentelemetry as distro
    from azure.identity import ManagedIdentityCredential

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(telemetry, "_configured", False)
    settings = Settings(
        storage=None,
        segments_storage=None,
        appinsights_connection_string="InstrumentationKey=00000000-0000-0000-0000-000000000000",
        managed_identity_client_id="11111111-1111-1111-1111-111111111111",
        running_in_azure=True,
    )
    assert telemetry.configure_telemetry(settings) is True
    assert telemetry.configure_telemetry(settings) is True  # idempotent
    assert len(calls) == 1
    kwargs = calls[0]
    assert kwargs["connection_string"] == settings.appinsights_connection_string
    assert isinstance(kwargs["credential"], ManagedIdentityCredential)
    assert kwargs["disable_logging"] is True
    for lib in ("httpx", "requests", "urllib", "urllib3"):
        assert kwargs["instrumentation_options"][lib] == {"enabled": False}


def test_local_configuration_uses_no_credential(monkeypatch):
    import azure.monitor.opentelemetry as distro

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(telemetry, "_configured", False)
    settings = Settings(
        storage=None, segments_storage=None, appinsights_connection_string="InstrumentationKey=x"
    )
    assert telemetry.configure_telemetry(settings) is True
    assert calls[0]["credential"] is None


def test_importing_telemetry_does_not_import_the_azure_monitor_distro():
    code = (
        "import sys, shared.telemetry\n"
        "heavy = [m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry.sdk'))]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_span_type_is_the_api_span(spans):
    provider, _ = spans
    with telemetry.run_span("vip", "run-1", tracer_provider=provider) as span:
        assert isinstance(span, trace.Span)


def test_exception_events_and_status_are_scrubbed(spans):
    # Issue 12, finding 4: the secret and an email appeared as they were in exception.message and
    # exception.stacktrace of the run span.
    from shared.redact import register_secret_value

    secret = "CANARY-telemetry-5d1e0b7a-key"
    register_secret_value(secret)
    provider, exporter = spans
    with pytest.raises(RuntimeError), telemetry.run_span("vip", "run-1", tracer_provider=provider):
        raise RuntimeError(
            f"ActiveCampaign refused key {secret} for jane.doe@example.com (jane.doe%40example.com)"
        )
    (span_data,) = exporter.get_finished_spans()
    (event,) = span_data.events
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "builtins.RuntimeError"
    assert "j***@example.com" in str(attributes["exception.message"])
    assert "RuntimeError" in str(attributes["exception.stacktrace"])
    texts = [str(v) for v in attributes.values()]
    texts += [span_data.status.description or "", *map(str, (span_data.attributes or {}).values())]
    for text in texts:
        assert secret not in text
        assert "jane.doe" not in text
    assert span_data.status.status_code == StatusCode.ERROR
    assert "RuntimeError" in (span_data.status.description or "")
