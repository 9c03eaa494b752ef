"""The web console: its assets and API (unit or integration), and headless Chromium (browser)."""

from pathlib import Path

import pytest

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(
        items,
        Path(__file__).parent,
        "unit",
        modules={"test_console_browser.py": "browser"},
        slow=("test_console_browser.py",),
    )
