"""The engine (shared/: config, mapping, runs, pipeline, telemetry, secrets): unit unless a test uses a server."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, "unit", slow=("test_canary.py",))
