"""infra/*.bicep parsed by pycep and scanned by checkov (.venv-iac): tests that read them are integration."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(
        items,
        Path(__file__).parent,
        "unit",
        needs=("bicep", "parsed", "checkov", "checkov_run"),
        slow=("checkov",),
    )
