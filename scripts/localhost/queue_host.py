"""Queue triggers: poll a queue in Storage (Azurite) with the host's semantics from host.json.

- A message is taken invisible for 10 minutes and kept so while the function runs (renewed at
  half-time), like the host's visibility renewal.
- Success deletes it. Failure makes it visible again after `visibilityTimeout`; when it has been
  dequeued `maxDequeueCount` times it is copied to `<queue>-poison` and deleted. A message already
  dequeued more often than that (a host that died mid-run) goes to the poison queue unprocessed.
- Bodies are decoded as `messageEncoding` says: `base64` (the host's default; one that does not
  decode fails its invocation like any other binding error) or `none` (handed over as they are,
  what this app's host.json sets).
- One message at a time per queue (host.json here says batchSize 1, newBatchThreshold 0).
- Empty polls back off from 100 ms to `maxPollingInterval`, as the host does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from scripts.localhost.appindex import AppFunction
from scripts.localhost.hostjson import QueueSettings
from scripts.localhost.invoke import Invocations, invoke

log = logging.getLogger("host.queue")
LEASE_SECONDS = 600  # the host takes a message for 10 minutes and renews it while it runs
MIN_POLL_SECONDS = 0.1


class BadMessage(Exception):
    pass


def decode_body(content: str | bytes, encoding: str) -> bytes:
    raw = content.encode() if isinstance(content, str) else content
    if encoding != "base64":
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadMessage(
            "the message is not base64 (host.json messageEncoding is base64); send it base64-encoded"
        ) from None


class _Lease:
    """Keeps a message invisible while its function runs; holds the current pop receipt."""

    def __init__(self, client: QueueClient, message: QueueMessage, stop: threading.Event) -> None:
        self._client = client
        self.message_id = message.id
        self.pop_receipt = message.pop_receipt
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{message.id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(LEASE_SECONDS / 2):
            try:
                with self._lock:
                    updated = self._client.update_message(
                        self.message_id, self.pop_receipt, visibility_timeout=LEASE_SECONDS
                    )
                    self.pop_receipt = updated.pop_receipt
            except Exception as exc:
                log.warning("could not renew message %s: %s", self.message_id, exc)


class QueueHost:
    def __init__(
        self,
        fn: AppFunction,
        settings: QueueSettings,
        service: Callable[[], QueueServiceClient],
        invocations: Invocations,
        stop: threading.Event,
    ) -> None:
        self.fn = fn
        self.queue_name = str(fn.trigger["queueName"])
        self.poison_name = self.queue_name + "-poison"
        self.settings = settings
        self._service = service
        self._invocations = invocations
        self._stop = stop
        self._thread = threading.Thread(target=self._loop, name=f"queue-{self.queue_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        delay = MIN_POLL_SECONDS
        last_error: str | None = None
        client: QueueClient | None = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self._service().get_queue_client(self.queue_name)
                message = client.receive_message(visibility_timeout=LEASE_SECONDS)
                if last_error is not None:
                    log.info("queue %s is reachable again", self.queue_name)
                    last_error = None
            except ResourceNotFoundError:
                message = None  # the queue does not exist (yet): nothing to do, as on the host
            except Exception as exc:
                from shared.reachability import storage_unreachable

                error = storage_unreachable(exc) or (
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
                if error != last_error:
                    log.error("queue %s cannot be polled (%s); retrying", self.queue_name, error)
                    last_error = error
                message = None
                delay = self.settings.max_polling_interval
            if message is None:
                # The host's backoff, with jitter so several queues do not poll in step.
                self._stop.wait(delay * random.uniform(0.8, 1.0))
                delay = min(max(delay * 2, MIN_POLL_SECONDS), self.settings.max_polling_interval)
                continue
            delay = MIN_POLL_SECONDS
            assert client is not None
            if self._stop.is_set():
                # Taken as the stop came: hand it back untouched for the next start.
                with contextlib.suppress(Exception):
                    client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
                return
            self._process(client, message)

    def _process(self, client: QueueClient, message: QueueMessage) -> None:
        count = int(message.dequeue_count or 1)
        if count > self.settings.max_dequeue_count:
            log.warning(
                "message %s on %s was dequeued %d times (more than maxDequeueCount %d): moving it to %s",
                message.id,
                self.queue_name,
                count,
                self.settings.max_dequeue_count,
                self.poison_name,
            )
            self._to_poison(client, message, message.pop_receipt)
            return
        with _Lease(client, message, self._stop) as lease:
            try:
                body = decode_body(message.content, self.settings.message_encoding)
                argument = FunctionQueueMessage(  # type: ignore[no-untyped-call]
                    id=message.id,
                    body=body,
                    dequeue_count=count,
                    expiration_time=message.expires_on,
                    insertion_time=message.inserted_on,
                    time_next_visible=message.next_visible_on,
                    pop_receipt=message.pop_receipt,
                )
                invoke(
                    self.fn,
                    argument,
                    f"New queue message detected on '{self.queue_name}'.",
                    self._invocations,
                )
                failed = False
            except Exception:
                failed = True
        receipt = lease.pop_receipt
        try:
            if not failed:
                client.delete_message(message.id, receipt)
            elif count >= self.settings.max_dequeue_count:
                log.warning(
                    "message %s failed on its attempt %d of %d: moving it to %s",
                    message.id,
                    count,
                    self.settings.max_dequeue_count,
                    self.poison_name,
                )
                self._to_poison(client, message, receipt)
            else:
                client.update_message(
                    message.id, receipt, visibility_timeout=int(self.settings.visibility_timeout)
                )
        except Exception as exc:
            # The message comes back when its lease runs out and is retried then.
            log.error("could not settle message %s on %s: %s", message.id, self.queue_name, exc)

    def _to_poison(self, client: QueueClient, message: QueueMessage, receipt: Any) -> None:
        poison = self._service().get_queue_client(self.poison_name)
        with contextlib.suppress(ResourceExistsError):
            poison.create_queue()
        poison.send_message(message.content)
        client.delete_message(message.id, receipt)
