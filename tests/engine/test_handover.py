"""Account turns (shared/handover.py): who holds an account, the line of waiting runs, waking the first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from shared.handover import ENTRY_GRACE, AccountTurns, Waiting, expected_seconds

HOST = "acct.api-us1.com"


@pytest.fixture
def container(azurite: str, unique_name: str) -> ContainerClient:
    client = BlobServiceClient.from_connection_string(azurite).get_container_client(unique_name)
    client.create_container()
    return client


@pytest.fixture
def queue(azurite: str, unique_name: str) -> QueueClient:
    client = QueueClient.from_connection_string(azurite, unique_name)
    client.create_queue()
    return client


def waiting(run_id: str, due: datetime, message_id: str = "m", receipt: str = "r") -> Waiting:
    return Waiting(run_id, f"export-{run_id}", message_id, receipt, due)


def test_the_holder_says_when_it_expects_to_be_done(container):
    turns = AccountTurns(container, HOST)
    assert turns.holder() is None
    lock = container.get_blob_client("locks/acct.api-us1.com")
    lock.upload_blob(b"")
    lease = BlobLeaseClient(lock)
    lease.acquire(lease_duration=15)
    now = datetime.now(UTC)
    turns.announce(lease.id, "r1", "vip", now + timedelta(seconds=expected_seconds(25_000, 100)))
    holder = turns.holder()
    assert holder is not None
    assert (holder.run_id, holder.export) == ("r1", "vip")
    remaining = holder.remaining(now)
    assert remaining is not None
    assert 59 < remaining <= 60  # 25,000 contacts at 100 imports of 250 a minute
    lease.release()
    assert turns.holder() is None  # released: the account is free, whatever the metadata says


def test_waiting_runs_go_in_the_order_they_were_queued_and_lapsed_entries_drop_out(container):
    turns = AccountTurns(container, HOST)
    now = datetime.now(UTC)
    turns.wait(waiting("20261205T000002000000Z-b", now + timedelta(seconds=30)))
    turns.wait(waiting("20261205T000001000000Z-a", now + timedelta(seconds=30)))
    turns.wait(waiting("20261205T000000000000Z-x", now - ENTRY_GRACE - timedelta(seconds=1)))  # died
    assert [e.run_id for e in turns.waiting(now)] == ["20261205T000001000000Z-a", "20261205T000002000000Z-b"]
    assert [b.name for b in container.list_blobs(name_starts_with="waiting/")] == [
        "waiting/acct.api-us1.com/20261205T000001000000Z-a.json",
        "waiting/acct.api-us1.com/20261205T000002000000Z-b.json",
    ]
    ahead = turns.ahead_of("20261205T000002000000Z-b", now)
    assert ahead is not None
    assert ahead.run_id == "20261205T000001000000Z-a"  # queued first: it goes first
    assert turns.ahead_of("20261205T000001000000Z-a", now) is None
    assert turns.ahead_of("20261205T000000500000Z-c", now) is None  # queued before every waiting run
    turns.leave("20261205T000001000000Z-a")
    assert [e.run_id for e in turns.waiting(now)] == ["20261205T000002000000Z-b"]


def test_waking_makes_the_first_waiting_message_visible_at_once(container, queue):
    turns = AccountTurns(container, HOST)
    now = datetime.now(UTC)
    first = queue.send_message("first", visibility_timeout=600)
    second = queue.send_message("second", visibility_timeout=600)
    turns.wait(Waiting("r1", "one", first.id, first.pop_receipt, now + timedelta(seconds=600)))
    turns.wait(Waiting("r2", "two", second.id, second.pop_receipt, now + timedelta(seconds=600)))
    assert queue.receive_message() is None
    woken = turns.wake_first(queue, now)
    assert woken is not None
    assert woken.run_id == "r1"
    message = queue.receive_message()
    assert message is not None
    assert message.content == "first"  # the first in line, not the second
    assert queue.receive_message() is None
    # Woken already: a second wake leaves it (and the next in line) alone.
    again = turns.wake_first(queue, now)
    assert again is not None
    assert again.run_id == "r1"
    assert queue.receive_message() is None
