"""The local host: scripts.serve, the CLI and make demo's helpers, run as a user runs them."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, "unit")
