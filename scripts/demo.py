"""`make demo`: a real export on local stand-ins, start to finish, then everything stopped.

Starts Azurite (Blob/Queue emulator) and the ActiveCampaign sandbox at ActiveCampaign's real rate
limits, uploads the bundled 12,000-profile sample segment in the Customer Insights layout, runs the
export with the CLI (`python -m shared.cli run`) exactly as a user would, prints the report and what
landed in the sandbox list, runs it again to show the incremental re-run sends nothing, and stops
what it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from scripts.azurite import AZURITE_BIN, connection_string, free_port, wait_for_port
from scripts.sample_segment import SAMPLE_DIR, upload_sample
from shared.settings import DEFAULT_APP_CONTAINER

ROOT = Path(__file__).resolve().parents[1]
DEMO_API_KEY = "demo-sandbox-key"  # the sandbox's key: a local stand-in, not a real credential
# Where the first run's report and rejected rows are copied (git-ignored: /out/).
DEMO_OUT = ROOT / "out" / "demo"
# ActiveCampaign processes bulk imports asynchronously, seconds after they are queued: the demo and the
# send bench run with that delay so confirmation polling is seen at its real pace.
PROCESSING_DELAY_S = 4.0
SECRET_ENV = "ACTIVECAMPAIGN_DEMO_API_KEY"  # noqa: S105 (a variable name: secret `activecampaign-demo-api-key` is read from it)


@contextmanager
def azurite() -> Iterator[str]:
    if not AZURITE_BIN.exists():
        sys.exit(f"Azurite is missing at {AZURITE_BIN}: run `make setup`")
    ports = [free_port(), free_port(), free_port()]
    args = [str(AZURITE_BIN), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose"]
    for service, port in zip(("blob", "queue", "table"), ports, strict=True):
        args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(ports[0], proc)
        wait_for_port(ports[1], proc)
        yield connection_string(*ports)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # Azurite may linger on open keep-alive connections
        proc.kill()
        proc.wait()


@contextmanager
def sandbox(scale: int = 1, *, processing_delay: float = 0.0) -> Iterator[str]:
    """The ActiveCampaign sandbox as a process, at the real limits times `scale`, each batch processed
    `processing_delay` seconds after its POST; yields its hostname."""
    args = [
        "--api-key",
        DEMO_API_KEY,
        "--list",
        "1:Newsletter",
        "--field",
        "1:LOYALTY_TIER",
        "--scale",
        str(scale),
        "--processing-delay",
        str(processing_delay),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            sys.exit(f"the ActiveCampaign sandbox did not start (said {line!r})")
        yield line.split(" ", 1)[1]
    finally:
        _stop(proc)


def cli(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, object] | None]:
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    # `run` ends with its report as one JSON line; other output (validate's verdict) is shown.
    report = json.loads(lines.pop()) if lines and lines[-1].startswith("{") else None
    if lines:
        print("\n".join(lines))
    return proc.returncode, report


def save_reports(storage: str, app_container: str, report: dict[str, object], target: Path) -> list[Path]:
    """Copy the run's report.json and rejected.csv out of Azurite, which keeps them in memory only
    and is stopped when the demo ends."""
    container = BlobServiceClient.from_connection_string(storage).get_container_client(app_container)
    target.mkdir(parents=True, exist_ok=True)
    saved = []
    for key in ("report_blob", "rejected_blob"):
        blob = report.get(key)
        if isinstance(blob, str):
            path = target / Path(blob).name
            path.write_bytes(container.download_blob(blob).readall())
            saved.append(path)
    return saved


def main() -> int:
    with (
        azurite() as storage,
        sandbox(processing_delay=PROCESSING_DELAY_S) as hostname,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print(
            f"Azurite is up; the ActiveCampaign sandbox listens on {hostname} at the real rate limits, "
            f"processing each batch {PROCESSING_DELAY_S:.0f} s after it is queued"
        )
        container = BlobServiceClient.from_connection_string(storage).get_container_client(
            "customer-insights"
        )
        uploaded = upload_sample(container, SAMPLE_DIR, "CustomerInsights_demo/BlobExport")
        print(f"uploaded the sample segment: {len(uploaded)} blobs (model.json + partitions)")

        config = (ROOT / "samples" / "config.demo.json").read_text().replace("{sandbox_hostname}", hostname)
        config_path = Path(tmp) / "config.json"
        config_path.write_text(config)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("KEY_VAULT_URL", "SEGMENTS_STORAGE", "WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME")
        }
        env.update({"AzureWebJobsStorage": storage, SECRET_ENV: DEMO_API_KEY})

        code, _ = cli(["validate", "--config", str(config_path)], env)
        if code:
            return code
        print("\n== first run: every valid profile is sent (about 30 s at 100 bulk imports a minute) ==")
        code, report = cli(["run", "demo-vip", "--config", str(config_path)], env)
        if report is None or code:
            print(f"the run failed (exit {code})")
            return code or 1
        keys = (
            "rows_read",
            "rejected",
            "duplicates",
            "contacts",
            "to_send",
            "accepted",
            "failed",
            "unconfirmed",
            "batches",
            "timings",
            "requests",
        )
        print(json.dumps({k: report[k] for k in keys}, indent=2))
        with urllib.request.urlopen(f"http://{hostname}/__sandbox/lists/1/members", timeout=30) as answer:
            members = json.loads(answer.read())
        print(f"the sandbox list 'Newsletter' now has {len(members.get('members', members))} members")

        print("\n== second run, same snapshot: the incremental sync sends nothing ==")
        code, again = cli(["run", "demo-vip", "--config", str(config_path), "--no-progress"], env)
        if again is not None:
            print(
                json.dumps({k: again[k] for k in ("contacts", "unchanged", "to_send", "accepted")}, indent=2)
            )
        app_container = env.get("APP_CONTAINER", DEFAULT_APP_CONTAINER)
        saved = save_reports(storage, app_container, report, DEMO_OUT)
        print(
            "\nthe first run's report and its rejected rows (with the reason for each): "
            + ", ".join(str(path.relative_to(ROOT)) for path in saved)
        )
        print("stopping Azurite and the sandbox (their data was in memory); `make serve` keeps them running")
        return code


if __name__ == "__main__":
    sys.exit(main())
