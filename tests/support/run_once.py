"""Run one export in a separate process, so a test can kill it with SIGKILL mid-run.

Usage: python -m tests.support.run_once CONFIG_JSON EXPORT RUN_ID (settings from the environment).
"""

from __future__ import annotations

import os
import sys

from shared.config import load_config_file
from shared.pipeline import RunContext, run_export
from shared.runs import RunStore
from shared.secrets import EnvSecrets
from shared.settings import load_settings
from shared.storage import blob_service


def main() -> int:
    config_path, export, run_id = sys.argv[1:4]
    settings = load_settings()
    config = load_config_file(
        config_path, allowed_suffixes=settings.allowed_host_suffixes, allow_loopback=True
    )
    blobs = blob_service(settings.require_storage())
    ctx = RunContext(
        settings, config, EnvSecrets(os.environ), blobs, blobs, poll_interval=0.05, lease_seconds=15
    )
    runs = RunStore(ctx.app_container())
    record = runs.get(export, run_id)
    assert record is not None
    print("started", flush=True)
    outcome = run_export(ctx, record, runs=runs)
    return 0 if outcome.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
