"""`make bench` scenario 6: scale-out, several instances sharing the runs of several accounts.

Three local hosts (`python -m scripts.serve`, the function app as in Azure) share one Azurite, as
three instances of one app share its storage account; three ActiveCampaign accounts (sandboxes, each
at twice the real limits: 200 bulk imports a minute) receive three exports each. All nine runs are
started at once through the API. Runs on one account take turns (they share its rate budget), so
the best any app can do is each account sending without pause: the ideal send phase is, for each
account, its contacts over its bulk ceiling (250 contacts an import), the largest of the three. The
figure is the send phase measured (from the first contact queued at any account to the end of the
last run) over that ideal: what handing accounts over, queue polling, instances busy with another
account's run and each run's own start and confirmation cost on top of the ceiling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
from azure.storage.blob import BlobServiceClient

from scripts.demo import DEMO_API_KEY, ROOT, azurite, sandbox
from scripts.serve_stack import read_ready
from shared.configstore import ConfigStore
from shared.handover import expected_seconds
from shared.runs import RunStore
from shared.storage import APP_CONTAINER
from tests.support.segments import profiles, write_ci_snapshot

HOSTS = 4
ACCOUNTS = 3
EXPORTS_PER_ACCOUNT = 3
ROWS_PER_EXPORT = 12_000
SCALE = 2  # the sandboxes' and the app's limits: twice ActiveCampaign's real ones
BULK_PER_MINUTE = 100 * SCALE
TARGET_RATIO = 1.5
WAIT_S = 600.0
NEVER = "0 0 0 1 1 *"


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _config(hostnames: list[str], container: str) -> dict[str, Any]:
    connections = {
        f"acct{a}": {
            "displayName": f"Account {a}",
            "hostname": hostname,
            "apiKeySecret": f"activecampaign-acct{a}",
            "dataPrivacyConsent": True,
        }
        for a, hostname in enumerate(hostnames)
    }
    exports = {
        f"a{a}-e{e}": {
            "connection": f"acct{a}",
            "trigger": "manual",
            "source": {"container": container, "folder": f"ci-a{a}-e{e}", "segment": "Vip"},
            "listId": 1,
            "mapping": {"email": "EmailAddress", "firstName": "FirstName", "lastName": "LastName"},
        }
        for a in range(len(hostnames))
        for e in range(EXPORTS_PER_ACCOUNT)
    }
    return {"connections": connections, "exports": exports}


def scaleout_scenario() -> dict[str, float]:
    with azurite() as storage, ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        hostnames = [stack.enter_context(sandbox(SCALE)) for _ in range(ACCOUNTS)]
        service = BlobServiceClient.from_connection_string(storage)
        segments = service.create_container("customer-insights")
        app = service.get_container_client(APP_CONTAINER)
        app.create_container()
        doc = _config(hostnames, segments.container_name)
        for n, name in enumerate(doc["exports"]):
            rows = profiles(ROWS_PER_EXPORT, start=n * ROWS_PER_EXPORT)
            write_ci_snapshot(segments, "Vip", rows, folder=doc["exports"][name]["source"]["folder"])
        ConfigStore(app, allowed_suffixes=(), allow_loopback=True).update(lambda _: doc)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "KEY_VAULT_URL"))},
            "AzureWebJobsStorage": storage,
            "EXPORT_SCHEDULE": NEVER,
            "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": str(5 * SCALE),
            "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": str(BULK_PER_MINUTE),
            # Every process gets the same keys from its environment (README: several local processes).
            **{f"ACTIVECAMPAIGN_ACCT{a}": DEMO_API_KEY for a in range(ACCOUNTS)},
        }
        urls = []
        for i in range(HOSTS):
            log_file = stack.enter_context(open(os.path.join(scratch, f"host{i}.log"), "w"))
            host = subprocess.Popen(
                [sys.executable, "-m", "scripts.serve", "--port", "0", "--grace", "5"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            stack.callback(_stop, host)
            urls.append(read_ready(host, f"local host {i}"))
        with httpx.Client(base_url=urls[0], timeout=30) as client:
            for name in doc["exports"]:
                resp = client.post(f"/api/exports/{name}/runs", json={})
                if resp.status_code != 202:
                    raise RuntimeError(f"starting a run of {name} answered {resp.status_code}: {resp.text}")
        runs = RunStore(app)
        deadline = time.monotonic() + WAIT_S
        while True:
            records = {name: runs.list(name, limit=1)[0] for name in doc["exports"]}
            if all(not r.active for r in records.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"runs still active after {WAIT_S:.0f} s: {sorted(records)}")
            time.sleep(0.5)
        if os.environ.get("BENCH_KEEP_LOGS"):
            import shutil

            shutil.copytree(scratch, os.environ["BENCH_KEEP_LOGS"], dirs_exist_ok=True)
        failed = {name: r.error for name, r in records.items() if r.status != "succeeded"}
        if failed:
            raise RuntimeError(f"runs failed: {failed}")
        # Each run: from its first contact queued (it held the account) to its end (account released).
        spans = {
            name: (_at(r.first_contact_queued_at or r.queued_at), _at(r.finished_at or r.queued_at))
            for name, r in records.items()
        }
        first = min(start for start, _ in spans.values())
        last = max(end for _, end in spans.values())
        gaps: list[float] = []
        overlap = 1
        for a in range(ACCOUNTS):
            own = sorted(spans[f"a{a}-e{e}"] for e in range(EXPORTS_PER_ACCOUNT))
            for (_, end), (start, _) in pairwise(own):
                gaps.append(start - end)
                overlap = max(overlap, 2 if start < end - 1.0 else 1)  # 1 s: record write vs release
        per_account = EXPORTS_PER_ACCOUNT * ROWS_PER_EXPORT
        ideal = expected_seconds(per_account, BULK_PER_MINUTE)
        paces = sorted(
            expected_seconds(ROWS_PER_EXPORT, BULK_PER_MINUTE) / max(0.001, end - start)
            for start, end in spans.values()
        )
        accepted = sum(r.counts.get("accepted", 0) for r in records.values())
        return {
            "send_s": last - first,
            "ideal_s": ideal,
            "ratio": (last - first) / ideal,
            "gap_median_s": sorted(gaps)[len(gaps) // 2],
            "gap_max_s": max(gaps),
            "pace_share": paces[len(paces) // 2],
            "overlap": float(overlap),
            "accepted": float(accepted),
            "expected": float(per_account * ACCOUNTS),
            "instances": float(len({r.instance for r in records.values()})),
        }


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    result = scaleout_scenario()
    print(result)
    sys.exit(0 if result["ratio"] <= TARGET_RATIO else 1)
