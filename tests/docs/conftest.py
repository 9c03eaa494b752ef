"""The docs: their shell examples run against the local stack (integration), their structure (unit)."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, "unit", needs=("stack",), slow=("stack",))
