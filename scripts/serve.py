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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scripts.localhost.appindex import AppFunction
    from scripts.localhost.queue_host import QueueHost
    from scripts.localhost.timer_host import TimerHost

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


class StartUpError(Exception):
    """The host cannot start (host.json unreadable, the HTTP port taken): one line for stderr."""


class LocalHost:
    """The local Functions host, one step per method: read host.json and index the app, host each
    trigger, bind HTTP, tell the user what is served, run until a stop signal, then drain.

    The project's modules are imported inside the methods: `--settings` must reach the environment
    before anything of the app reads it.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from scripts.localhost.invoke import Invocations

        self.args = args
        self.script_root: Path = args.script_root
        # From the environment, not a flag: a key on the command line shows in every process listing.
        self.function_key = os.environ.get(FUNCTION_KEY_SETTING) or None
        self.stop = threading.Event()
        self.invocations = Invocations()
        self.timers: list[TimerHost] = []
        self.queues: list[QueueHost] = []
        self.lines: list[str] = []  # one per function served, for the banner

    def start_up(self) -> None:
        """Everything up to serving; raises StartUpError with the line to print."""
        from scripts.localhost.appindex import index_app, load_apps
        from scripts.localhost.hostjson import HostJsonError, load_host_config

        try:
            self.config = load_host_config(self.script_root, os.environ)
        except HostJsonError as exc:
            raise StartUpError(str(exc)) from None
        self.index = index_app(load_apps(self.script_root), os.environ)
        self.host_queues, self.host_blobs = _storage_factories("AzureWebJobsStorage")
        for fn in self.index.functions:
            if fn.trigger_type == "timerTrigger":
                self._host_timer(fn)
            elif fn.trigger_type == "queueTrigger":
                self._host_queue(fn)
            elif fn.trigger_type != "httpTrigger":
                self.index.errors[fn.name] = (
                    f"trigger {fn.trigger_type} is not served by the local host (use func start)"
                )
        self._bind_http()

    def _host_timer(self, fn: AppFunction) -> None:
        from scripts.localhost.timer_host import ScheduleError, TimerHost

        try:
            timer = TimerHost(fn, self.invocations, self.stop, _monitor_container(self.host_blobs))
        except ScheduleError as exc:
            self.index.errors[fn.name] = str(exc)
            return
        self.timers.append(timer)
        self.lines.append(f"  {fn.name}: timerTrigger, schedule '{timer.schedule.expression}' (UTC)")

    def _host_queue(self, fn: AppFunction) -> None:
        from scripts.localhost.queue_host import QueueHost

        setting = str(fn.trigger.get("connection") or "AzureWebJobsStorage")
        service = self.host_queues if setting == "AzureWebJobsStorage" else _storage_factories(setting)[0]
        host = QueueHost(fn, self.config.queues, service, self.invocations, self.stop)
        self.queues.append(host)
        self.lines.append(f"  {fn.name}: queueTrigger on '{host.queue_name}' ({setting})")

    def _bind_http(self) -> None:
        from scripts.localhost.http_host import HttpHost
        from scripts.localhost.routes import RouteError

        http_functions = [f for f in self.index.functions if f.trigger_type == "httpTrigger"]
        host, port = self.args.host, self.args.port
        try:
            self.http = HttpHost(
                http_functions,
                self.config.route_prefix,
                self.invocations,
                host,
                port,
                function_key=self.function_key,
            )
        except (RouteError, OSError) as exc:
            raise StartUpError(f"cannot serve HTTP on {host}:{port}: {exc}") from None
        self.base = f"http://{host}:{self.http.port}"
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        for fn in sorted(http_functions, key=lambda f: str(f.trigger.get("route") or f.name)):
            methods = ",".join(fn.trigger.get("methods") or ["*"])
            route = fn.trigger.get("route") or fn.name
            self.lines.insert(0, f"  {fn.name}: [{methods}] {self.base}{prefix}/{route}")

    def print_banner(self) -> None:
        print(f"Local Functions host (python -m scripts.serve) for {self.script_root / 'function_app.py'}")
        print("Functions:")
        print("\n".join(self.lines))
        for name, why in sorted(self.index.errors.items()):
            print(f"  NOT SERVED {name}: {why}")
        self._print_auth_notes()
        if self.config.queues.batch_size != 1:
            print(
                f"host.json batchSize is {self.config.queues.batch_size}: the local host takes one message at a time per queue"
            )

    def _print_auth_notes(self) -> None:
        from shared.auth import parse_auth_mode

        if self.function_key is None:
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

    def serve_until_stopped(self) -> int:
        """Serve until SIGINT/SIGTERM, then drain; the exit code."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.http.start()
        for worker in self._workers():
            worker.start()
        print(f"READY {self.base}", flush=True)
        self.stop.wait()
        return self._drain()

    def _workers(self) -> list[TimerHost | QueueHost]:
        return [*self.timers, *self.queues]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            print("second stop signal: stopping now", file=sys.stderr, flush=True)
            os._exit(130)
        self.stop.set()

    def _drain(self) -> int:
        grace = self.args.grace
        log.info(
            "stopping: no new requests, messages or timer runs; %d invocation(s) running get %.0fs to finish "
            "(Ctrl-C again stops at once)",
            self.invocations.running,
            grace,
        )
        self.http.server.shutdown()
        if not self.invocations.wait_idle(grace):
            log.error(
                "%d invocation(s) still running after %.0fs; stopping anyway. A queue message comes back when its "
                "visibility lease ends and its run resumes from its last checkpoint",
                self.invocations.running,
                grace,
            )
            sys.stdout.flush()
            os._exit(EXIT_STOPPED_WITH_WORK_RUNNING)
        self.http.server.server_close()
        for worker in self._workers():
            worker.join(5)
        log.info("stopped")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging()
    if args.settings is not None:
        _load_local_settings(args.settings)

    from shared.redact import install_redaction

    install_redaction()
    host = LocalHost(args)
    try:
        host.start_up()
    except StartUpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host.print_banner()
    return host.serve_until_stopped()


if __name__ == "__main__":
    sys.exit(main())
