"""`make demo`'s helpers: what the user is shown, and the reports kept after Azurite stops."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from scripts import demo


@pytest.mark.integration  # runs the app as a subprocess
def test_the_cli_verdict_is_shown_and_a_run_report_is_parsed(capsys):
    code, report = demo.cli(
        ["validate", "--config", str(demo.ROOT / "samples" / "config.example.json")], dict(os.environ)
    )
    assert (code, report) == (0, None)
    assert "configuration OK" in capsys.readouterr().out  # not swallowed as if it were the report


def test_the_first_runs_report_and_rejected_rows_are_copied_out_of_azurite(azurite: str, tmp_path: Path):
    name = f"demo-{uuid.uuid4().hex[:8]}"
    container = BlobServiceClient.from_connection_string(azurite).create_container(name)
    container.upload_blob("runs/demo-vip/r1/report.json", json.dumps({"rows_read": 3}).encode())
    container.upload_blob("runs/demo-vip/r1/rejected.csv", b"partition,line,reason,detail\r\n")
    report: dict[str, object] = {
        "report_blob": "runs/demo-vip/r1/report.json",
        "rejected_blob": "runs/demo-vip/r1/rejected.csv",
    }

    saved = demo.save_reports(azurite, name, report, tmp_path / "out")

    assert [p.name for p in saved] == ["report.json", "rejected.csv"]
    assert json.loads(saved[0].read_text()) == {"rows_read": 3}
    assert saved[1].read_bytes().startswith(b"partition,line,reason")
