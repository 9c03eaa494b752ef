"""The function app as the host drives it, for tests: built once per process, called in-process.

Handlers are called with real azure.functions request/message objects against Azurite, the
ActiveCampaign sandbox and (where it matters) the Key Vault stand-in. The fixtures that prepare app
storage (`app_env`, `segments`) live in tests/fixtures/app.py; these are the plain helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.decorators.function_app import Function
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from functions import services

ROOT = Path(__file__).resolve().parents[2]


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
    sent = dict(headers or {})
    if method not in ("GET", "HEAD") and not any(h.lower() == "content-type" for h in sent):
        # As the console and the documented curl calls do (the app refuses other content types).
        sent["Content-Type"] = "application/json"
    req = func.HttpRequest(
        method=method,
        url=f"http://localhost/api/{path}",
        headers=sent,
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
        """Take one message as the host does and wrap it in the worker's message type: its text as it
        is in the queue, undecoded (host.json messageEncoding none)."""
        q = queue or self.queue
        raw = QueueClient.from_connection_string(self.azurite, q.queue_name)
        received = raw.receive_message(visibility_timeout=60)
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


def queue_client(azurite: str, name: str) -> QueueClient:
    return QueueClient.from_connection_string(
        azurite,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


def run_isolated(code: str, **settings: str) -> str:
    """Run `code` in a fresh interpreter with no app settings but `settings`; its stdout."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **settings}
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


# --- runs through the queue, as the host carries them --------------------------------------------

MAX_DEQUEUE_COUNT = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]


def start(name: str = "vip", body: Any = None, params: dict[str, str] | None = None):
    return call("export_runs", "POST", f"exports/{name}/runs", route={"name": name}, body=body, params=params)


def run_status(location: str):
    _, name, _, run_id = location.removeprefix("/api/").split("/")
    return call("export_run", "GET", location, route={"name": name, "runId": run_id})


def deliver(env: AppEnv) -> None:
    """One delivery of the next message to the worker, as the host does it."""
    message = env.receive()
    try:
        handler("export_worker")(message)
    except Exception:
        assert message.id is not None
        if (message.dequeue_count or 0) >= MAX_DEQUEUE_COUNT:
            # The host moves the message's text as it is (already encoded as it was written).
            raw = QueueClient.from_connection_string(env.azurite, env.poison.queue_name)
            raw.send_message(message.get_body().decode())
            env.delete(message)
        else:  # visible again at once: the retry needs no waiting here
            env.queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)
        raise
    env.delete(message)
