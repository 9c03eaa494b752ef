"""The repository itself: a clone with nothing beside it runs its tests."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, "unit")
