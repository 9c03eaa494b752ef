"""The load stage against the sandbox: partial 400s, failed/interrupted batches, size limits."""

from __future__ import annotations

import contextvars
from typing import Any

from sandbox import Fault, SandboxServer
from shared.activecampaign import ActiveCampaignClient, Pacer
from shared.load import BatchSender, SendOutcome, operation
from shared.outcomes import BATCH_INTERRUPTED, CONTACT_TOO_LARGE, REJECTED, Failure
from tests.fixtures.sandbox import SANDBOX_API_KEY


def client(sandbox: SandboxServer) -> ActiveCampaignClient:
    return ActiveCampaignClient(
        sandbox.hostname, SANDBOX_API_KEY, pacer=Pacer(150, 3000), allowed_suffixes=(), allow_loopback=True
    )


def payload(email: str) -> dict[str, Any]:
    return {"email": email, "first_name": "X", "subscribe": [{"listid": "1"}]}


class Collected:
    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.failed: dict[int, Failure] = {}
        self.queued: list[list[int]] = []

    def done(self, outcome: SendOutcome) -> None:
        self.accepted += outcome.accepted
        self.failed.update(outcome.failed)

    def sender(self, c: ActiveCampaignClient, **kw: Any) -> BatchSender:
        return BatchSender(
            c,
            exclude_automations=False,
            on_queued=lambda _b, idx: self.queued.append(idx),
            on_done=self.done,
            poll_interval=0.01,
            **kw,
        )


def test_partial_400_drops_the_named_contacts_and_resends_the_rest(ac_sandbox: SandboxServer) -> None:
    got = Collected()
    with client(ac_sandbox) as c:
        sender = got.sender(c)
        emails = [f"p{i}@example.com" for i in range(10)]
        emails[3] = (
            "broken@@example.com"  # the sandbox refuses it, like ActiveCampaign: the whole request fails
        )
        emails[7] = "also broken@example.com"
        for i, email in enumerate(emails):
            sender.add(operation(i, email, payload(email)))
        assert sender.drain(timeout=20)
    assert sorted(got.failed) == [3, 7]
    assert {failure.code for failure in got.failed.values()} == {REJECTED}
    assert sorted(got.accepted) == [i for i in range(10) if i not in (3, 7)]
    assert got.queued == [[0, 1, 2, 4, 5, 6, 8, 9]]  # nothing queued with the bad ones in it
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 8


def test_failed_and_interrupted_batches_are_resent_once_then_reported(ac_sandbox: SandboxServer) -> None:
    got = Collected()
    with client(ac_sandbox) as c:
        sender = got.sender(c, max_contacts=5)
        ac_sandbox.inject(Fault.batch_failed())  # first batch fails once: resent, then accepted
        for i in range(5):
            sender.add(operation(i, f"a{i}@example.com", payload(f"a{i}@example.com")))
        sender.flush()
        assert sender.drain(timeout=20)
        assert sorted(got.accepted) == [0, 1, 2, 3, 4]
        ac_sandbox.inject(Fault.batch_interrupted(applied=2, count=2))  # fails twice: reported as failed
        for i in range(5, 10):
            sender.add(operation(i, f"a{i}@example.com", payload(f"a{i}@example.com")))
        assert sender.drain(timeout=20)
    assert sorted(got.failed) == [5, 6, 7, 8, 9]
    assert {failure.code for failure in got.failed.values()} == {BATCH_INTERRUPTED}
    assert len(got.queued) == 4  # two batches, each sent twice


def test_batches_respect_the_request_size_limit(ac_sandbox: SandboxServer) -> None:
    got = Collected()
    big = "x" * 5_000
    with client(ac_sandbox) as c:
        sender = got.sender(c)
        for i in range(200):
            email = f"big{i}@example.com"
            sender.add(operation(i, email, {**payload(email), "last_name": big}))
        sender.add(
            operation(200, "huge@example.com", {**payload("huge@example.com"), "last_name": "y" * 500_000})
        )
        assert sender.drain(timeout=30)
    assert got.failed == {200: Failure(CONTACT_TOO_LARGE, "payload exceeds the request size limit")}
    assert len(got.accepted) == 200
    assert all(len(batch) < 200 for batch in got.queued)  # 200 x 5 KB does not fit in one 400 KB request
    assert ac_sandbox.state.counters()["requests"] > 0


def test_requests_overlap_yet_batches_are_reported_in_plan_order(ac_sandbox: SandboxServer) -> None:
    got = Collected()
    ac_sandbox.inject(Fault.slow(1.0, path="/api/3/import/bulk_import"))  # the first request is held
    with client(ac_sandbox) as c, got.sender(c, max_contacts=5) as sender:
        for i in range(10):
            sender.add(operation(i, f"o{i}@example.com", payload(f"o{i}@example.com")))
        assert sender.drain(timeout=20)
    # The second request did not wait for the first one's answer: ActiveCampaign queued it first...
    assert [b.contacts[0].email for b in ac_sandbox.state.batches()] == ["o5@example.com", "o0@example.com"]
    # ...but the sender reports batches in the order it built them, so a checkpoint never claims
    # operations 5-9 queued while 0-4 are still unanswered.
    assert got.queued == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert sorted(got.accepted) == list(range(10))


def test_a_partial_400_is_resolved_before_later_batches_are_reported(ac_sandbox: SandboxServer) -> None:
    got = Collected()
    with client(ac_sandbox) as c, got.sender(c, max_contacts=5) as sender:
        for i in range(10):
            email = "bad@@example.com" if i == 2 else f"q{i}@example.com"
            sender.add(operation(i, email, payload(email)))
        assert sender.drain(timeout=20)
    assert got.queued == [[0, 1, 3, 4], [5, 6, 7, 8, 9]]
    assert list(got.failed) == [2]
    assert sorted(got.accepted) == [0, 1, 3, 4, 5, 6, 7, 8, 9]


run_label: contextvars.ContextVar[str] = contextvars.ContextVar("run_label", default="none")


class LabelledClient(ActiveCampaignClient):
    """Records the context each bulk import runs in (the worker thread's, if it were not carried)."""

    seen: list[str]

    def bulk_import(self, contacts: list[dict[str, Any]], *, exclude_automations: bool = False) -> Any:
        self.seen.append(run_label.get())
        return super().bulk_import(contacts, exclude_automations=exclude_automations)


def test_requests_run_in_the_callers_context(ac_sandbox: SandboxServer) -> None:
    got = Collected()
    c = LabelledClient(
        ac_sandbox.hostname, SANDBOX_API_KEY, pacer=Pacer(150, 3000), allowed_suffixes=(), allow_loopback=True
    )
    c.seen = []
    run_label.set("run-42")  # e.g. the OpenTelemetry span of the run
    with c, got.sender(c, max_contacts=2) as sender:
        for i in range(6):
            sender.add(operation(i, f"ctx{i}@example.com", payload(f"ctx{i}@example.com")))
        assert sender.drain(timeout=20)
    assert c.seen == ["run-42"] * 3
