"""The function app as the host sees it, plus the helpers the other test_functions_* modules share.

The app is built once per process (`built_functions`): a second `app.get_functions()` raises. Handlers
are called in-process with real azure.functions request/message objects against Azurite, the
ActiveCampaign sandbox and (where it matters) the Key Vault stand-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.decorators.function_app import Function
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from functions import services
from shared.storage import APP_CONTAINER, RUNS_POISON_QUEUE, RUNS_QUEUE, SEGMENT_EVENTS_QUEUE

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_FUNCTIONS = {
    "connections_list",
    "connection_item",
    "exports_list",
    "export_item",
    "export_runs",
    "export_run",
    "export_run_report",
    "export_run_rejected",
    "export_run_unsubscribed",
    "connection_lists",
    "connection_fields",
    "connection_tags",
    "export_reset",
    "export_schedule",
    "export_worker",
    "export_worker_poison",
    "caller_me",
    "connection_check",
    "segment_columns",
    "console_page",
    "console_asset",
    "segment_events",
}
# Served to a browser's address bar, which cannot send a function key: static files, no data.
ANONYMOUS_FUNCTIONS = {"console_page", "console_asset"}
HEAVY_MODULES = ("azure.identity", "numpy", "httpx", "shared.pipeline", "azure.monitor.opentelemetry")


@cache
def built_functions() -> dict[str, Function]:
    """The app's functions, built once for the whole test process."""
    import function_app

    return {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}


def handler(name: str) -> Any:
    return built_functions()[name].get_user_function()


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]


def call(
    function: str,
    method: str,
    path: str,
    *,
    route: Mapping[str, str] | None = None,
    body: Any = None,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> Response:
    """Call an HTTP function with a real func.HttpRequest, as the host would."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    req = func.HttpRequest(
        method=method,
        url=f"http://localhost/api/{path}",
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params=dict(route or {}),
        body=data,
    )
    resp = handler(function)(req)
    text = resp.get_body().decode()
    return Response(resp.status_code, json.loads(text) if text else None, dict(resp.headers))


@dataclass
class AppEnv:
    azurite: str
    app: ContainerClient
    queue: QueueClient
    poison: QueueClient
    monkeypatch: pytest.MonkeyPatch
    events: QueueClient

    def set(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)
        services._services.cache_clear()

    def messages(self, queue: QueueClient | None = None) -> list[dict[str, Any]]:
        """Peek (without taking) the JSON bodies waiting on a queue."""
        return [json.loads(m.content) for m in (queue or self.queue).peek_messages(max_messages=32)]

    def receive(self, queue: QueueClient | None = None) -> HostQueueMessage:
        """Take one message as the host does and wrap it in the worker's message type."""
        q = queue or self.queue
        received = q.receive_message(visibility_timeout=60)
        assert received is not None, f"no message on queue {q.queue_name}"
        return HostQueueMessage(  # type: ignore[no-untyped-call]
            id=received.id,
            body=received.content.encode(),
            dequeue_count=received.dequeue_count,
            pop_receipt=received.pop_receipt,
        )

    def delete(self, message: HostQueueMessage, queue: QueueClient | None = None) -> None:
        assert message.id is not None
        (queue or self.queue).delete_message(message.id, message.pop_receipt)


def _queue(azurite: str, name: str) -> QueueClient:
    return QueueClient.from_connection_string(
        azurite,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


@pytest.fixture
def app_env(azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppEnv]:
    """App settings for Azurite, and empty app storage (config, runs, state, run queues)."""
    for name in list(os.environ):
        if name.startswith(
            ("WEBSITE_", "CONTAINER_NAME", "KEY_VAULT", "AUTH_MODE", "ACTIVECAMPAIGN_", "RUN_TIME")
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("ACTIVECAMPAIGN_REQUESTS_PER_SECOND", "150")
    monkeypatch.setenv("ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE", "3000")
    services._services.cache_clear()
    services.set_secrets_factory(None)
    app = BlobServiceClient.from_connection_string(azurite).get_container_client(APP_CONTAINER)
    if not app.exists():
        app.create_container()
    # The app container and run queues have fixed names: each test starts from them empty.
    for blob in app.list_blobs():
        app.delete_blob(blob.name)
    queue, poison = _queue(azurite, RUNS_QUEUE), _queue(azurite, RUNS_POISON_QUEUE)
    events = _queue(azurite, SEGMENT_EVENTS_QUEUE)
    for q in (queue, poison, events):
        with contextlib.suppress(ResourceExistsError):
            q.create_queue()
        q.clear_messages()
    yield AppEnv(azurite, app, queue, poison, monkeypatch, events)
    services._services.cache_clear()
    services.set_secrets_factory(None)


# --- the app as the host indexes it -------------------------------------------------------------


def _run_isolated(code: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # no app settings at all
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_app_indexes_every_function_with_an_empty_environment():
    out = _run_isolated(
        "import json, function_app\nprint(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))"
    )
    assert set(json.loads(out.splitlines()[-1])) == EXPECTED_FUNCTIONS


def test_importing_the_app_loads_no_heavy_module():
    out = _run_isolated(
        "import json, sys, function_app\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))"
    )
    assert json.loads(out.splitlines()[-1]) == []


def test_bindings_are_what_the_host_needs():
    functions = built_functions()
    assert set(functions) == EXPECTED_FUNCTIONS
    for name, fn in functions.items():
        trigger = fn.get_bindings_dict()["bindings"][0]
        if trigger["type"] == "httpTrigger":
            expected = "anonymous" if name in ANONYMOUS_FUNCTIONS else "function"
            assert str(trigger["authLevel"].value) == expected, name
    timer = functions["export_schedule"].get_bindings_dict()["bindings"][0]
    assert timer["schedule"] == "%EXPORT_SCHEDULE%"
    assert timer["runOnStartup"] is False
    worker = functions["export_worker"].get_bindings_dict()["bindings"][0]
    poison = functions["export_worker_poison"].get_bindings_dict()["bindings"][0]
    assert (worker["queueName"], poison["queueName"]) == (RUNS_QUEUE, RUNS_POISON_QUEUE)
    assert worker["connection"] == poison["connection"] == "AzureWebJobsStorage"
    events = functions["segment_events"].get_bindings_dict()["bindings"][0]
    assert (events["type"], events["queueName"]) == ("queueTrigger", SEGMENT_EVENTS_QUEUE)
    assert events["connection"] == "AzureWebJobsStorage"


def test_a_missing_setting_fails_the_request_with_its_name_not_the_import(app_env):
    app_env.monkeypatch.delenv("AzureWebJobsStorage")
    services._services.cache_clear()
    resp = call("exports_list", "GET", "exports")
    assert resp.status == 500
    assert resp.body["error"]["code"] == "AppMisconfigured"
    assert "AzureWebJobsStorage" in resp.body["error"]["message"]


def test_local_settings_sample_documents_every_setting_read():
    from shared.settings import DEFAULT_EXPORT_SCHEDULE, SETTINGS_READ

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    values = sample["Values"]
    assert set(SETTINGS_READ) <= set(values)
    assert values["EXPORT_SCHEDULE"] == DEFAULT_EXPORT_SCHEDULE
    api_doc = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in SETTINGS_READ if f"`{name}`" not in api_doc]
    assert missing == [], f"docs/api.md does not describe {missing}"


# --- building blocks for API tests --------------------------------------------------------------


def create_connection(hostname: str, name: str = "main", *, allow_contributors: bool = False) -> Response:
    from tests.fixtures.sandbox import SANDBOX_API_KEY

    body = {
        "displayName": f"Sandbox {name}",
        "hostname": hostname,
        "dataPrivacyConsent": True,
        "allowContributors": allow_contributors,
        "apiKey": SANDBOX_API_KEY,
    }
    resp = call("connection_item", "PUT", f"connections/{name}", route={"name": name}, body=body)
    assert resp.status in (200, 201), resp.body
    return resp


def export_body(container: str, connection: str = "main", **options: Any) -> dict[str, Any]:
    from tests.support.segments import FOLDER

    return {
        "connection": connection,
        "source": {"container": container, "folder": FOLDER, "segment": "Vip"},
        "listId": 1,
        "mapping": {
            "email": "EmailAddress",
            "firstName": "FirstName",
            "lastName": "LastName",
            "fields": {"LOYALTY_TIER": "LoyaltyTier"},
        },
        **options,
    }


def create_export(container: str, name: str = "vip", connection: str = "main", **options: Any) -> Response:
    body = export_body(container, connection, **options)
    resp = call("export_item", "PUT", f"exports/{name}", route={"name": name}, body=body)
    assert resp.status in (200, 201), resp.body
    return resp


@pytest.fixture
def segments(azurite: str, unique_name: str) -> ContainerClient:
    """A fresh container for segment snapshots."""
    return BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
