"""The poison handler never fails its message: a failure is logged and the message ends there.

Re-raising would make the host retry it and then move it to `export-runs-poison-poison`, a queue
nothing reads.
"""

from __future__ import annotations

import json
import logging

from shared.runs import RunStore
from tests.support.app import AppEnv, handler


def test_a_failing_poison_handler_logs_and_ends_the_message(app_env: AppEnv, caplog):
    # A run record the handler cannot read (an unknown status): marking the run failed raises.
    record = RunStore.record_blob("vip", "20261120T060000000000Z-abcdef")
    app_env.app.upload_blob(
        record,
        json.dumps(
            {"runId": "20261120T060000000000Z-abcdef", "export": "vip", "status": "bogus", "trigger": "api"}
        ),
    )
    body = {"runId": "20261120T060000000000Z-abcdef", "export": "vip", "continuation": 0}
    app_env.poison.send_message(json.dumps(body))
    caplog.set_level(logging.ERROR, logger="functions.worker")
    poisoned = app_env.receive(app_env.poison)

    handler("export_worker_poison")(poisoned)  # returns: the host deletes the message

    (logged,) = [r for r in caplog.records if "could not mark run" in r.getMessage()]
    assert "20261120T060000000000Z-abcdef" in logged.getMessage()
    assert logged.exc_info is not None
    assert logged.exc_info[0] is ValueError
    assert "the poison message is dropped" in logged.getMessage()
