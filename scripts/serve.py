"""Serve the function app locally: `.venv/bin/python -m scripts.serve --port 7071`.

Loads `function_app.py` as it is and serves every function it registers, against the app settings
in the environment: HTTP triggers on http://127.0.0.1:PORT/api/..., the timer on its NCRONTAB
schedule, queue triggers polling their queues in AzureWebJobsStorage (Azurite). It starts nothing
else: run Azurite and the ActiveCampaign sandbox yourself, or use `make serve`.

Prints a banner on stdout ending in `READY http://127.0.0.1:PORT`, logs invocations on stderr, and
stops on Ctrl-C / SIGTERM: no new request or message is taken, and running invocations get
`--grace` seconds to finish (a second Ctrl-C stops at once). Where it differs from the Functions
host: README, "Try the API locally". Where Core Tools is installed, `func start` is the equivalent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("host")
EXIT_STOPPED_WITH_WORK_RUNNING = 3
# The one function key the local host checks, when set (the Functions host keeps its keys in storage).
FUNCTION_KEY_SETTING = "SERVE_FUNCTION_KEY"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.serve", description="Serve the function app locally (HTTP, timer, queues)"
    )
    parser.add_argument(
        "--port", type=int, default=7071, help="HTTP port (default 7071, as func start; 0: any)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    parser.add_argument(
        "--script-root", type=Path, default=ROOT, help="folder with function_app.py and host.json"
    )
    parser.add_argument(
        "--settings",
        type=Path,
        help="a local.settings.json whose Values are used where the environment does not set them",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="seconds running invocations get to finish after Ctrl-C / SIGTERM (default 60)",
    )
    return parser.parse_args(argv)


def _load_local_settings(path: Path) -> None:
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"{path}: cannot read its Values ({exc})") from None
    for name, value in values.items():
        if isinstance(value, str):
            os.environ.setdefault(name, value)


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    # The Storage and HTTP clients log every request at INFO; the host's console shows invocations.
    for noisy in ("azure", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _storage_factories(
    setting: str,
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Queue and blob service clients for the connection named by `setting`, built on first use."""
    from shared.settings import SettingsError, storage_connection
    from shared.storage import blob_service, queue_service

    cache: dict[str, Any] = {}
    lock = threading.Lock()

    def conn() -> Any:
        value = storage_connection(setting)
        if value is None:
            raise SettingsError(
                f"{setting} is not set: set it to a storage connection string (Azurite: UseDevelopmentStorage=true)"
            )
        return value

    def queues() -> Any:
        with lock:
            if "queue" not in cache:
                cache["queue"] = queue_service(conn())
            return cache["queue"]

    def blobs() -> Any:
        with lock:
            if "blob" not in cache:
                cache["blob"] = blob_service(conn())
            return cache["blob"]

    return queues, blobs


def _monitor_container(blobs: Callable[[], Any]) -> Callable[[], Any]:
    def container() -> Any:
        from azure.core.exceptions import ResourceExistsError

        client = blobs().get_container_client("azure-webjobs-hosts")
        with contextlib.suppress(ResourceExistsError):
            client.create_container()
        return client

    return container


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging()
    if args.settings is not None:
        _load_local_settings(args.settings)

    from scripts.localhost.appindex import index_app, load_apps
    from scripts.localhost.hostjson import HostJsonError, load_host_config
    from scripts.localhost.http_host import HttpHost
    from scripts.localhost.invoke import Invocations
    from scripts.localhost.queue_host import QueueHost
    from scripts.localhost.routes import RouteError
    from scripts.localhost.timer_host import ScheduleError, TimerHost
    from shared.auth import parse_auth_mode
    from shared.redact import install_redaction

    install_redaction()
    script_root: Path = args.script_root
    # From the environment, not a flag: a key on the command line shows in every process listing.
    function_key = os.environ.get(FUNCTION_KEY_SETTING) or None
    try:
        config = load_host_config(script_root, os.environ)
    except HostJsonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    index = index_app(load_apps(script_root), os.environ)
    stop = threading.Event()
    invocations = Invocations()
    http_functions = [f for f in index.functions if f.trigger_type == "httpTrigger"]
    timers: list[TimerHost] = []
    queues: list[QueueHost] = []
    host_queues, host_blobs = _storage_factories("AzureWebJobsStorage")
    lines: list[str] = []
    for fn in index.functions:
        if fn.trigger_type == "timerTrigger":
            try:
                timer = TimerHost(fn, invocations, stop, _monitor_container(host_blobs))
            except ScheduleError as exc:
                index.errors[fn.name] = str(exc)
                continue
            timers.append(timer)
            lines.append(f"  {fn.name}: timerTrigger, schedule '{timer.schedule.expression}' (UTC)")
        elif fn.trigger_type == "queueTrigger":
            setting = str(fn.trigger.get("connection") or "AzureWebJobsStorage")
            service = host_queues if setting == "AzureWebJobsStorage" else _storage_factories(setting)[0]
            host = QueueHost(fn, config.queues, service, invocations, stop)
            queues.append(host)
            lines.append(f"  {fn.name}: queueTrigger on '{host.queue_name}' ({setting})")
        elif fn.trigger_type != "httpTrigger":
            index.errors[fn.name] = (
                f"trigger {fn.trigger_type} is not served by the local host (use func start)"
            )
    try:
        http = HttpHost(
            http_functions, config.route_prefix, invocations, args.host, args.port, function_key=function_key
        )
    except (RouteError, OSError) as exc:
        print(f"error: cannot serve HTTP on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    base = f"http://{args.host}:{http.port}"
    prefix = f"/{config.route_prefix}" if config.route_prefix else ""
    for fn in sorted(http_functions, key=lambda f: str(f.trigger.get("route") or f.name)):
        methods = ",".join(fn.trigger.get("methods") or ["*"])
        lines.insert(0, f"  {fn.name}: [{methods}] {base}{prefix}/{fn.trigger.get('route') or fn.name}")

    print(f"Local Functions host (python -m scripts.serve) for {script_root / 'function_app.py'}")
    print("Functions:")
    print("\n".join(lines))
    for name, why in sorted(index.errors.items()):
        print(f"  NOT SERVED {name}: {why}")
    if function_key is None:
        print(
            "Function keys are not checked locally (as with Core Tools' func start): send none, or any "
            f"(set {FUNCTION_KEY_SETTING} to have routes with authLevel function ask for that key)."
        )
    else:
        print(
            f"Function keys are checked: routes with authLevel function need the value of {FUNCTION_KEY_SETTING} "
            "in x-functions-key or ?code= (401 otherwise); anonymous routes need none."
        )
    if parse_auth_mode(os.environ.get("AUTH_MODE")) == "entra":
        print(
            "AUTH_MODE=entra: the X-MS-CLIENT-PRINCIPAL header is taken as sent, for local testing only "
            "(on Azure, App Service Authentication sets it and drops any a client sends)."
        )
        if os.environ.get("WEBSITE_AUTH_ENABLED", "").strip().lower() != "true":
            print(
                "  WEBSITE_AUTH_ENABLED is not True, so the app refuses every request (503) as it would on Azure "
                "without App Service Authentication; set WEBSITE_AUTH_ENABLED=True to test roles with "
                "hand-made principals."
            )
    if config.queues.batch_size != 1:
        print(
            f"host.json batchSize is {config.queues.batch_size}: the local host takes one message at a time per queue"
        )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            print("second stop signal: stopping now", file=sys.stderr, flush=True)
            os._exit(130)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    http.start()
    workers: list[TimerHost | QueueHost] = [*timers, *queues]
    for worker in workers:
        worker.start()
    print(f"READY {base}", flush=True)
    stop.wait()

    running = invocations.running
    log.info(
        "stopping: no new requests, messages or timer runs; %d invocation(s) running get %.0fs to finish "
        "(Ctrl-C again stops at once)",
        running,
        args.grace,
    )
    http.server.shutdown()
    if not invocations.wait_idle(args.grace):
        log.error(
            "%d invocation(s) still running after %.0fs; stopping anyway. A queue message comes back when its "
            "visibility lease ends and its run resumes from its last checkpoint",
            invocations.running,
            args.grace,
        )
        sys.stdout.flush()
        os._exit(EXIT_STOPPED_WITH_WORK_RUNNING)
    http.server.server_close()
    for worker in workers:
        worker.join(5)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
