"""Pacer: the client-side budget that keeps an account under ActiveCampaign's limits (fake clock)."""

import itertools
import threading

import pytest

from sandbox.limits import max_in_window
from shared.activecampaign import Pacer, shared_pacer


class FakeTime:
    """A clock that only moves when someone sleeps: pacing decisions become exact and instant."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def paced(rps: float = 5.0, bpm: float = 100.0, **kwargs: int) -> tuple[Pacer, FakeTime]:
    fake = FakeTime()
    return Pacer(rps, bpm, clock=fake.clock, sleep=fake.sleep, **kwargs), fake


def test_requests_never_exceed_the_per_second_limit_in_any_window():
    pacer, fake = paced(rps=5)
    sent = []
    for _ in range(60):
        pacer.acquire()
        sent.append(fake.now)
    assert max_in_window(sent, 1.0) <= 5
    # The margin costs little: 60 requests take about 13 s, not much more.
    assert sent[-1] - sent[0] == pytest.approx(59 / (5 * 0.9))


def test_bulk_imports_are_spaced_evenly_with_a_margin_so_no_minute_sees_the_limit():
    pacer, fake = paced(bpm=100)
    sent = []
    for _ in range(250):
        pacer.acquire(bulk=True)
        sent.append(fake.now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # Burst 1: no two bulk imports closer than the even spacing, so no minute ever holds 100.
    assert min(gaps) == pytest.approx(60 / 98)
    assert max_in_window(sent, 60.0) <= 98


def test_bulk_imports_also_count_against_the_request_budget():
    pacer, fake = paced(rps=5, bpm=600)  # bulk spacing 0.102 s: the per-second limit must still hold
    sent = []
    for i in range(40):
        pacer.acquire(bulk=i % 2 == 0)
        sent.append(fake.now)
    assert max_in_window(sent, 1.0) <= 5


def test_hold_delays_every_request_after_a_rate_limit_answer():
    pacer, fake = paced()
    pacer.acquire()
    start = fake.now
    pacer.hold(3.0)
    pacer.acquire()
    assert fake.now >= start + 3.0


def test_single_contact_imports_have_their_own_lower_limit():
    pacer, fake = paced(bpm=100)
    sent = []
    for _ in range(30):
        pacer.acquire(bulk=True, single=True)
        sent.append(fake.now)
    assert max_in_window(sent, 60.0) <= 20
    # ... and they do not use up the multi-contact budget.
    before = fake.now
    pacer.acquire(bulk=True)
    assert fake.now - before < 1.0


def test_a_bulk_hold_leaves_ordinary_requests_alone():
    pacer, fake = paced()
    pacer.acquire(bulk=True)
    pacer.hold(60.0, bulk=True)
    before = fake.now
    pacer.acquire()
    assert fake.now - before < 1.0
    pacer.acquire(bulk=True)
    assert fake.now - before >= 60.0


def test_a_burst_allowance_lets_that_many_requests_through_at_once():
    pacer, fake = paced(rps=5, request_burst=3)
    for _ in range(3):
        pacer.acquire()
    assert fake.sleeps == []
    pacer.acquire()
    assert fake.sleeps


def test_threads_sharing_a_pacer_get_distinct_evenly_spaced_slots():
    # A frozen clock and a sleep that only records when each caller would send: if two threads
    # ever got the same slot, the gaps below would contain a zero.
    slots: list[float] = []
    record = threading.Lock()
    local = threading.local()

    def sleep(seconds: float) -> None:
        local.delay = seconds

    pacer = Pacer(10.0, 100.0, clock=lambda: 0.0, sleep=sleep)

    def worker() -> None:
        for _ in range(25):
            local.delay = 0.0
            pacer.acquire()
            with record:
                slots.append(local.delay)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    assert len(slots) == 200
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) == pytest.approx(1 / (10 * 0.9))


@pytest.mark.parametrize(("rps", "bpm"), [(0, 100), (5, 0), (-1, 100)])
def test_non_positive_rates_are_refused(rps, bpm):
    with pytest.raises(ValueError, match="positive"):
        Pacer(rps, bpm)


def test_shared_pacer_is_one_budget_per_account():
    a = shared_pacer("pacer-test.api-us1.com", 5, 100)
    assert shared_pacer("PACER-TEST.api-us1.com", 5, 100) is a
    assert shared_pacer("other-pacer-test.api-us1.com", 5, 100) is not a
