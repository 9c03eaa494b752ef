"""`make serve`: the whole app on this machine, ready to try, until Ctrl-C.

Starts Azurite (from node_modules, in memory), the ActiveCampaign sandbox (`python -m sandbox`) and
the function app (`python -m scripts.serve`); uploads the bundled sample segment; creates a sample
connection and export through the API as a user would; prints the URLs, the export and three curl
commands; serves until Ctrl-C / SIGTERM, then stops everything it started.

Ports: Azurite's usual 10000-10002 (so `UseDevelopmentStorage=true` reaches it), the sandbox on 8765
and the app on 7071, each replaced by a free port when taken (the printed commands use the real ones).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
SANDBOX_API_KEY = "local-sandbox-key"
CONNECTION = "main"
EXPORT = "vip"
SEGMENT_CONTAINER = "customer-insights"
SEGMENT_FOLDER = "CustomerInsights_1234/BlobExport"  # as in the README's example configuration
# The well-known development account of every Storage emulator; not a secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 60.0


def port_or_free(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def storage_connection_string(blob: int, queue: int, table: int) -> str:
    base = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={base}:{blob}/{DEV_ACCOUNT};QueueEndpoint={base}:{queue}/{DEV_ACCOUNT};"
        f"TableEndpoint={base}:{table}/{DEV_ACCOUNT};"
    )


def wait_for_port(port: int, proc: subprocess.Popen[Any], what: str) -> None:
    # Polling until the port accepts is readiness detection, bounded by START_TIMEOUT_S.
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:.0f}s")


def read_ready(proc: subprocess.Popen[str], what: str) -> str:
    """The `READY <address>` line a child prints once it listens; the rest of its stdout is echoed."""
    assert proc.stdout is not None
    lines: list[str] = []
    ready = threading.Event()
    found: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not ready.is_set():
                lines.append(line)
                if line.startswith("READY "):
                    found.append(line.split(" ", 1)[1])
                    ready.set()
            else:
                print(line, flush=True)
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(START_TIMEOUT_S) or not found:
        raise RuntimeError(f"{what} did not start:\n" + "\n".join(lines))
    return found[0]


class Stack:
    """The processes started, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[Any]]] = []

    def start(self, what: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        # Own process group: a Ctrl-C reaches this script only, which then stops each child in turn.
        proc = subprocess.Popen(list(args), cwd=ROOT, start_new_session=True, **kwargs)
        self.procs.append((what, proc))
        return proc

    def stop(self) -> None:
        for what, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=90 if what == "the function app" else 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            print(f"stopped {what}", flush=True)


def start_azurite(stack: Stack, attempts: int = 3) -> tuple[int, int, int]:
    """Azurite on its usual ports, or free ones; tried again on new ports if one was taken meanwhile."""
    import tempfile

    problem = ""
    for _ in range(attempts):
        ports = [port_or_free(p) for p in (10000, 10001, 10002)]
        args = [str(AZURITE_BIN), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose"]
        for service, port in zip(("blob", "queue", "table"), ports, strict=True):
            args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
        errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (read after the process ends)
        proc = stack.start(
            "Azurite",
            args,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        try:
            wait_for_port(ports[0], proc, "Azurite")
            wait_for_port(ports[1], proc, "Azurite")
            return ports[0], ports[1], ports[2]
        except RuntimeError as exc:
            errors.seek(0)
            problem = f"{exc}: {errors.read().strip()[-500:]}"
            stack.procs.remove(("Azurite", proc))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    raise RuntimeError(f"Azurite did not start ({problem})")


def sample_export() -> dict[str, Any]:
    return {
        "connection": CONNECTION,
        "source": {"container": SEGMENT_CONTAINER, "folder": SEGMENT_FOLDER, "segment": "HighValueSegment"},
        "listId": 1,
        "mapping": {
            "email": "EmailAddress",
            "firstName": "FirstName",
            "lastName": "LastName",
            "phone": "Telephone",
            "fields": {"LOYALTY_TIER": "LoyaltyTier"},
            "tags": ["segment:high-value"],
        },
        "trigger": "manual",
        "mode": "upsert",
    }


def create_sample(api: str, sandbox_host: str) -> dict[str, Any]:
    with httpx.Client(base_url=api, timeout=60) as client:
        resp = client.put(
            f"/connections/{CONNECTION}",
            json={
                "displayName": "Local ActiveCampaign sandbox",
                "hostname": sandbox_host,
                "dataPrivacyConsent": True,
                "apiKey": SANDBOX_API_KEY,
            },
        )
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"creating connection {CONNECTION!r} failed: {resp.status_code} {resp.text}")
        resp = client.put(f"/exports/{EXPORT}", json=sample_export())
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"creating export {EXPORT!r} failed: {resp.status_code} {resp.text}")
        body: dict[str, Any] = resp.json()
        return body


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.serve_stack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=7071, help="the app's port (default 7071, or a free one)")
    parser.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop everything once the sample is set up (a smoke test of `make serve`)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not AZURITE_BIN.exists():
        print(f"Azurite is missing at {AZURITE_BIN}: run `make setup` (npm ci)", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack()
    try:
        blob, queue, table = start_azurite(stack)
        storage = storage_connection_string(blob, queue, table)

        sandbox = stack.start(
            "the ActiveCampaign sandbox",
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(port_or_free(8765)),
                "--api-key",
                SANDBOX_API_KEY,
                "--list",
                "1:Newsletter",
                "--list",
                "2:Customers",
                "--list",
                "3:VIP",
                "--field",
                "1:LOYALTY_TIER",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        sandbox_host = read_ready(sandbox, "the ActiveCampaign sandbox")

        from azure.storage.blob import BlobServiceClient

        from scripts.sample_segment import SAMPLE_DIR, upload_sample

        container = BlobServiceClient.from_connection_string(storage).get_container_client(SEGMENT_CONTAINER)
        uploaded = upload_sample(container, SAMPLE_DIR, SEGMENT_FOLDER)

        app_port = port_or_free(args.port)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "KEY_VAULT_URL"))},
            "AzureWebJobsStorage": storage,
            "EXPORT_SCHEDULE": os.environ.get("EXPORT_SCHEDULE", "0 */5 * * * *"),
            # Without Key Vault, secret activecampaign-main is read from this variable.
            "ACTIVECAMPAIGN_MAIN": SANDBOX_API_KEY,
            # Pick up a new run within 2 s instead of the host's default of up to a minute.
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:02",
        }
        app = stack.start(
            "the function app",
            [sys.executable, "-m", "scripts.serve", "--port", str(app_port)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        base = read_ready(app, "the function app (scripts.serve)")
        dev_ports = (blob, queue, table) == (10000, 10001, 10002)
        api = base + "/api"
        export = create_sample(api, sandbox_host)
        print_welcome(
            api, "UseDevelopmentStorage=true" if dev_ports else storage, sandbox_host, export, len(uploaded)
        )
        if args.exit_when_ready:
            return 0
        while not stop.is_set():
            if app.poll() is not None:
                print(f"the function app exited with code {app.returncode}", file=sys.stderr)
                return 1
            stop.wait(0.5)
        print("\nstopping (the function app lets a running invocation finish first)", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"make serve: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def print_welcome(api: str, storage: str, sandbox_host: str, export: dict[str, Any], blobs: int) -> None:
    shown = {k: v for k, v in export.items() if k not in ("etag", "lastRun", "lastDecision", "warnings")}
    print(
        f"""
The app is running on this machine.
  API              {api}   (function keys are not checked locally)
  Web console      {api}/console   (asks for a function key: any value works locally)
  Storage          Azurite (in memory: gone when stopped), AzureWebJobsStorage={storage}
  ActiveCampaign   the sandbox at http://{sandbox_host} (API key {SANDBOX_API_KEY!r})
  Sample segment   {blobs} blobs in container {SEGMENT_CONTAINER!r}, 12,000 profiles (131 of them bad on purpose)

Sample export {EXPORT!r} (created with PUT {api}/exports/{EXPORT}):
{json.dumps(shown, indent=2)}

Try:
  curl -sS -X POST {api}/exports/{EXPORT}/runs -H 'Content-Type: application/json' -d '{{}}'
  curl -sS {api}/exports/{EXPORT}/runs
  curl -sS {api}/connections/{CONNECTION}/fields

The CLI works on the same storage and delivered state:
  export AzureWebJobsStorage='{storage}'
  export ACTIVECAMPAIGN_MAIN={SANDBOX_API_KEY}
  .venv/bin/python -m shared.cli run {EXPORT} --from-app

Ctrl-C stops everything.""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
