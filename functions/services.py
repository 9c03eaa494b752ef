"""What every function needs (settings, app storage, run queue, secrets), built on first use.

Nothing here runs at import time: settings are read inside handlers, so a missing or bad setting
fails that invocation with a message naming the setting instead of hiding every function from the
host. Clients are cached per `Settings` value (one set per process in Azure; tests that change the
environment get fresh ones).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import azure.functions as func

from functions.http import Handler, api_handler, caller_for
from functions.messages import RunMessage
from shared.auth import Action, Caller, caller_from_headers
from shared.settings import Settings, load_settings
from shared.storage import (
    SEGMENT_EVENTS_QUEUE,
    blob_service,
    poison_queue,
    queue_service,
)

if TYPE_CHECKING:
    # The storage SDK and the stores built on it are imported when the services are first built (in
    # a handler), not when function_app.py imports this module to register the functions.
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient, QueueMessage

    from shared.configstore import ConfigStore
    from shared.decisions import DecisionStore, SnapshotClaims
    from shared.runs import RunRecord, RunStore, RunTrigger
    from shared.secrets import SecretsProvider

__all__ = ["RouteHandler", "SecretsFactory", "Services", "api_route", "get_services", "set_secrets_factory"]

log = logging.getLogger(__name__)

SecretsFactory = Callable[[Settings], "SecretsProvider"]
_secrets_factory: SecretsFactory | None = None


def set_secrets_factory(factory: SecretsFactory | None) -> None:
    """Replace how the secrets provider is built (tests: a Key Vault stand-in); None restores it."""
    global _secrets_factory
    _secrets_factory = factory
    _services.cache_clear()


@dataclass
class Services:
    settings: Settings
    app_blobs: BlobServiceClient
    app_container: ContainerClient
    config: ConfigStore
    runs: RunStore
    run_queue: QueueClient
    decisions: DecisionStore
    claims: SnapshotClaims
    event_queue: QueueClient
    _secrets: SecretsProvider | None = field(default=None, repr=False)
    _segment_blobs: BlobServiceClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def secrets(self) -> SecretsProvider:
        # Built lazily: Key Vault needs azure.identity, slow to import and useless to most requests.
        with self._lock:
            if self._secrets is None:
                if _secrets_factory is not None:
                    self._secrets = _secrets_factory(self.settings)
                else:
                    from shared.secrets import secrets_from_settings

                    self._secrets = secrets_from_settings(self.settings)
            return self._secrets

    @property
    def segment_blobs(self) -> BlobServiceClient:
        with self._lock:
            if self._segment_blobs is None:
                self._segment_blobs = blob_service(self.settings.require_segments_storage())
            return self._segment_blobs

    def start_run(
        self,
        export: str,
        *,
        trigger: RunTrigger,
        dry_run: bool = False,
        full: bool = False,
        force: bool = False,
        started_by: str | None = None,
        started_by_hash: str | None = None,
        withdraw: bool = False,
        snapshot_id: str | None = None,
        recheck: Callable[[], None] | None = None,
    ) -> RunRecord:
        """Start a queued run with its message on the run queue (shared/triggers.start_run)."""
        from shared.triggers import start_run

        def enqueue(record: RunRecord) -> None:
            self.enqueue(RunMessage(record.run_id, export, dry_run, full, force))

        return start_run(
            self.runs,
            export,
            trigger=trigger,
            enqueue=enqueue,
            dry_run=dry_run,
            full=full,
            force=force,
            started_by=started_by,
            started_by_hash=started_by_hash,
            withdraw=withdraw,
            snapshot_id=snapshot_id,
            recheck=recheck,
        )

    def enqueue(self, message: RunMessage, *, delay_seconds: int = 0) -> QueueMessage:
        """Put `message` on the run queue (invisible for `delay_seconds`); the sent message's id and
        pop receipt let it be made visible earlier (shared/handover.py)."""
        return self.run_queue.send_message(message.to_json(), visibility_timeout=delay_seconds or None)

    def enqueue_event(self, text: str, *, delay_seconds: int = 0) -> None:
        """The app's own message on the refresh-event queue (a delayed check of a CSV folder)."""
        self.event_queue.send_message(text, visibility_timeout=delay_seconds or None)


RouteHandler = Callable[[func.HttpRequest, Services, Caller], func.HttpResponse]


def api_route(
    action: Action | Mapping[str, Action | None] | None, *, allow_contributors: bool = False
) -> Callable[[RouteHandler], Handler]:
    """Every API route's prologue, written once: errors become JSON answers (`api_handler`), then the
    handler gets the services and the caller, already authorized for `action`.

    `action` is one Action for every method, or one per HTTP method; None (for a method, or for the
    route) means the handler decides itself (against the export's connection, or the run's starter),
    from the caller as the headers name it.
    """

    def decorate(handler: RouteHandler) -> Handler:
        def route(req: func.HttpRequest) -> func.HttpResponse:
            svc = get_services()
            wanted = action if action is None or isinstance(action, Action) else action[req.method.upper()]
            if wanted is None:
                caller = caller_from_headers(req.headers, svc.settings.auth_mode)
            else:
                caller = caller_for(
                    req, svc.settings.auth_mode, wanted, allow_contributors=allow_contributors
                )
            return handler(req, svc, caller)

        # The host indexes the function by the signature it sees: (req) only, so no functools.wraps.
        route.__name__, route.__qualname__ = handler.__name__, handler.__qualname__
        route.__module__, route.__doc__ = handler.__module__, handler.__doc__
        return api_handler(route)

    return decorate


def get_services() -> Services:
    """The services for the current app settings. Raises SettingsError naming a bad setting."""
    return _services(load_settings())


@lru_cache(maxsize=4)
def _services(settings: Settings) -> Services:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    from shared.configstore import ConfigStore
    from shared.decisions import DecisionStore, SnapshotClaims
    from shared.runs import RunStore

    storage = settings.require_storage()
    app_blobs = blob_service(storage)
    container = app_blobs.get_container_client(settings.app_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    queues = queue_service(storage)
    # The Functions host reads queue messages as base64 (its default messageEncoding).
    run_queue, event_queue = (
        queues.get_queue_client(
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        for name in (settings.runs_queue, SEGMENT_EVENTS_QUEUE)
    )
    for name in (settings.runs_queue, poison_queue(settings.runs_queue), SEGMENT_EVENTS_QUEUE):
        with contextlib.suppress(ResourceExistsError):
            queues.get_queue_client(name).create_queue()
    _configure_observability(settings)
    from shared.faults import arm

    arm(settings.test_crash_at)
    return Services(
        settings=settings,
        app_blobs=app_blobs,
        app_container=container,
        config=ConfigStore(
            container,
            allowed_suffixes=settings.allowed_host_suffixes,
            allow_loopback=not settings.running_in_azure,
        ),
        runs=RunStore(container, keep=settings.runs_kept_per_export),
        run_queue=run_queue,
        decisions=DecisionStore(container),
        claims=SnapshotClaims(container),
        event_queue=event_queue,
    )


def _configure_observability(settings: Settings) -> None:
    from shared.redact import install_redaction
    from shared.telemetry import configure_telemetry

    install_redaction()
    configure_telemetry(settings)
