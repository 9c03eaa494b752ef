"""The client-side budget that keeps an account under ActiveCampaign's limits (token buckets)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = [
    "BULK_WINDOW_SECONDS",
    "DEFAULT_REQUEST_SAFETY_MARGIN",
    "DEFAULT_SAFETY_MARGIN",
    "Pacer",
    "shared_pacer",
]


BULK_WINDOW_SECONDS = 60.0  # ActiveCampaign counts bulk imports over a minute


DEFAULT_SAFETY_MARGIN = 0.02  # bulk: 1.2 s a minute of slack for jitter, at 2% of throughput


# Requests/s: below the app's share of the account's rate (ACTIVECAMPAIGN_REQUEST_SHARE), which is
# what other integrations are promised. 10% keeps a burst-1 bucket's count in any 10 s window within
# share * limit * 10 (at 4 requests/s: 36 + 1 of 40) and, with a share of 1, leaves the late sends
# of threads on a busy host room before ActiveCampaign's one-second window counts six. Throughput is
# bounded by the bulk limit (under 2 imports/s), not by this: the polls keep ~2 requests/s of room.
DEFAULT_REQUEST_SAFETY_MARGIN = 0.1


class _Bucket:
    """A token bucket kept as the time the next token is due (GCRA), so a caller can reserve a slot
    under a lock and sleep outside it."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.interval = 1.0 / per_second
        self.tolerance = (burst - 1) * self.interval
        self.due = -math.inf

    def reserve(self, now: float) -> float:
        """Take the next token; return when it may be used (>= now)."""
        due = max(self.due, now)
        start = max(now, due - self.tolerance)
        self.due = due + self.interval
        return start

    def hold_until(self, until: float) -> None:
        self.due = max(self.due, until + self.tolerance)


class Pacer:
    """Thread-safe token buckets for one ActiveCampaign account: all requests, and bulk imports.

    Every bucket stays a margin below the published limit, so network jitter cannot make
    ActiveCampaign's sliding window count one request too many. Bulk imports are spaced evenly
    (burst 1) because ActiveCampaign counts them over a whole minute: a burst at the start of one
    minute followed by steady sending would overrun the next window. Single-contact imports have
    their own, lower limit at ActiveCampaign and so their own bucket.
    """

    def __init__(
        self,
        requests_per_second: float = 5.0,
        bulk_imports_per_minute: float = 100.0,
        *,
        request_share: float = 1.0,
        single_imports_per_minute: float = 20.0,
        safety_margin: float = DEFAULT_SAFETY_MARGIN,
        request_safety_margin: float = DEFAULT_REQUEST_SAFETY_MARGIN,
        request_burst: int = 1,
        bulk_window_seconds: float = BULK_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if min(requests_per_second, bulk_imports_per_minute, single_imports_per_minute) <= 0:
            raise ValueError("requests_per_second and the bulk imports per minute must be positive")
        if not (0 <= safety_margin < 1 and 0 <= request_safety_margin < 1):
            raise ValueError("safety margins must be in [0, 1)")
        if request_burst < 1:
            raise ValueError("request_burst must be at least 1")
        if not 0 < request_share <= 1:
            raise ValueError("request_share must be in (0, 1]")
        self.requests_per_second = requests_per_second
        self.bulk_imports_per_minute = bulk_imports_per_minute
        self.bulk_window_seconds = bulk_window_seconds
        # The app's share of the account's rate: requests are spaced at least 1/rate apart (burst 1),
        # so any window of W seconds holds at most rate * W + 1 of them: within share * limit * W for
        # windows of 10 s and more (the margin pays for the + 1), and within the share rounded up
        # for a single second.
        self.request_share = request_share
        self._requests = _Bucket(
            requests_per_second * request_share * (1 - request_safety_margin), request_burst
        )
        keep = (1 - safety_margin) / bulk_window_seconds
        self._bulk = _Bucket(bulk_imports_per_minute * keep, 1)
        self._single = _Bucket(single_imports_per_minute * keep, 1)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def acquire(self, bulk: bool = False, *, single: bool = False) -> None:
        """Block until a request (and, for a bulk import, a bulk slot) may be sent.

        `single`: the bulk import holds one contact (ActiveCampaign limits those separately).
        """
        # Bulk slot first: reserving the request slot before a long bulk wait would let the request
        # be sent late, bunched with later reservations, and overrun the per-second limit.
        if bulk:
            self._wait(self._single if single else self._bulk)
        self._wait(self._requests)

    def hold(self, seconds: float, *, bulk: bool = False) -> None:
        """Send nothing (or no bulk import) for `seconds`: ActiveCampaign said the budget is spent."""
        with self._lock:
            until = self._clock() + seconds
            for bucket in (self._bulk, self._single) if bulk else (self._requests,):
                bucket.hold_until(until)

    def _wait(self, bucket: _Bucket) -> None:
        with self._lock:
            now = self._clock()
            start = bucket.reserve(now)
        if start > now:
            self._sleep(start - now)


_shared_pacers: dict[str, Pacer] = {}


_shared_pacers_lock = threading.Lock()


def shared_pacer(
    hostname: str, requests_per_second: float, bulk_imports_per_minute: float, request_share: float = 1.0
) -> Pacer:
    """The process-wide Pacer of one account: every key of an account shares its budget.

    The first call for a host fixes its rates (they come from settings, fixed for the process). Runs
    in other processes take turns with this one (the account lease), so one run's pacing is all
    runs' pacing on the account.
    """
    key = hostname.strip().lower()
    with _shared_pacers_lock:
        pacer = _shared_pacers.get(key)
        if pacer is None:
            pacer = Pacer(requests_per_second, bulk_imports_per_minute, request_share=request_share)
            _shared_pacers[key] = pacer
        return pacer
