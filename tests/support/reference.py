"""Where the tests find the reference material vendored into the repository (tests/reference/).

Nothing the tests read may live outside the repository: tests/reference/SOURCES.md names where
each file came from.
"""

from __future__ import annotations

from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
REAL_CDM = REFERENCE / "real-cdm"
