"""The function routes, queue and timer handlers (functions/, function_app.py): unit unless a test uses the app's storage."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, "unit")
