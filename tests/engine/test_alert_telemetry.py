"""The telemetry the alert rules read, as the code emits it (OpenTelemetry SDK in-memory reader).

tests/infra/test_infra.py checks each rule's query against `telemetry.EMITTED`; these tests check that
`EMITTED` is what the code really records, so neither side can drift alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from tests.support.app import AppEnv, create_connection, create_export
from tests.support.segments import profiles, write_ci_snapshot


@pytest.fixture
def meters() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def recorded(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    if data is None:
        return out
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_a_finished_run_records_its_shares_with_the_attributes_emitted_says(meters):
    provider, reader = meters
    counts = {"rowsRead": 200, "rejected": 50, "sent": 100, "failed": 25, "accepted": 75}
    telemetry.record_run_metrics("vip", counts, 12.5, "succeeded", meter_provider=provider)
    points = recorded(reader)
    run_metrics = set(telemetry.EMITTED) - {telemetry.HOURS_SINCE_SUCCESS_HISTOGRAM}
    assert set(points) == run_metrics
    for name, data in points.items():
        for point in data:
            assert set(point.attributes) == telemetry.EMITTED[name], name
    (rejected,) = points[telemetry.REJECTED_SHARE_HISTOGRAM]
    (failed,) = points[telemetry.FAILED_SHARE_HISTOGRAM]
    assert (rejected.max, failed.max) == (0.25, 0.25)
    assert dict(rejected.attributes) == {"export": "vip", "status": "succeeded"}


def test_a_continuation_or_an_empty_run_records_no_share(meters):
    provider, reader = meters
    telemetry.record_run_metrics(
        "vip", {"rowsRead": 10, "rejected": 9}, 1.0, "continue", meter_provider=provider
    )
    telemetry.record_run_metrics("vip", {"rowsRead": 0, "sent": 0}, 1.0, "failed", meter_provider=provider)
    points = recorded(reader)
    assert telemetry.REJECTED_SHARE_HISTOGRAM not in points
    assert telemetry.FAILED_SHARE_HISTOGRAM not in points


def test_the_timer_measures_how_long_a_pending_export_has_gone_without_success(
    app_env: AppEnv, ac_sandbox, segments, meters
):
    from functions.services import get_services
    from functions.timer import queue_due_exports

    provider, reader = meters
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(3))
    create_export(segments.container_name, name="pending")
    create_export(segments.container_name, name="manual", trigger="manual")
    landed = (
        segments.get_blob_client("CustomerInsights_test/BlobExport/model.json")
        .get_blob_properties()
        .last_modified
    )
    queue_due_exports(get_services(), landed + timedelta(hours=30), meter_provider=provider)

    (point,) = recorded(reader)[telemetry.HOURS_SINCE_SUCCESS_HISTOGRAM]
    assert dict(point.attributes) == {"export": "pending", "trigger": "onRefresh"}
    assert set(point.attributes) == telemetry.EMITTED[telemetry.HOURS_SINCE_SUCCESS_HISTOGRAM]
    # Never delivered: counted from when its snapshot landed.
    assert point.max == pytest.approx(30.0, abs=0.01)
