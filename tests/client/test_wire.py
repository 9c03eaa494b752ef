"""ActiveCampaign's wire rules stand without an HTTP library (shared/activecampaign/wire.py): the
discovery views and the client read ids by one rule, and importing them loads no HTTP client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.activecampaign.wire import int_id
from shared.discovery import list_view, total_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", 12), (" 7 ", 7), (3, 3), (True, None), ("-1", None), ("1.5", None), ("", None), (None, None)],
)
def test_ids_as_activecampaign_spells_them(value, expected):
    assert int_id(value) == expected
    # discovery reads them by the same rule
    assert list_view({"id": value})["id"] == expected
    assert total_of({"meta": {"total": value}}) == expected


def test_the_wire_rules_and_the_discovery_views_import_no_http_client():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, shared.activecampaign, shared.activecampaign.wire, shared.discovery\n"
            "print(json.dumps([m for m in ('httpx', 'httpcore', 'tenacity') if m in sys.modules]))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out.splitlines()[-1]) == []
