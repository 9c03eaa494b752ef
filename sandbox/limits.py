"""ActiveCampaign's documented limits and the sliding windows that enforce them."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Limits:
    """Limits the sandbox enforces; mutable so a test can tighten them on a running server."""

    requests_per_second: int = 5
    bulk_multi_per_minute: int = 100
    bulk_single_per_minute: int = 20
    max_contacts_per_request: int = 250
    # A bulk_import body of this many bytes or more is refused (ActiveCampaign: "under 400,000 bytes").
    max_payload_bytes: int = 400_000
    # Seconds the worker holds each queued batch before applying it (0: as soon as possible).
    processing_delay: float = 0.0
    # import/info answers `"status": false` when polled this soon (seconds) after the POST.
    info_false_window: float = 0.0

    def scaled(self, factor: float) -> Limits:
        """The same limits with the rate ceilings multiplied (the throughput benchmark runs at 10x)."""
        return Limits(
            requests_per_second=max(1, round(self.requests_per_second * factor)),
            bulk_multi_per_minute=max(1, round(self.bulk_multi_per_minute * factor)),
            bulk_single_per_minute=max(1, round(self.bulk_single_per_minute * factor)),
            max_contacts_per_request=self.max_contacts_per_request,
            max_payload_bytes=self.max_payload_bytes,
            processing_delay=self.processing_delay,
            info_false_window=self.info_false_window,
        )


def max_in_window(times: Iterable[float], window: float) -> int:
    """Most events in any half-open window (t - window, t], as ActiveCampaign's sliding window counts."""
    ordered = sorted(times)
    peak, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


@dataclass(frozen=True)
class WindowDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until a slot frees up; 0 when allowed


class SlidingWindow:
    """Admits at most `limit` events within any `window` seconds.

    Only admitted events are remembered: a refused request does not push the window forward,
    so a client that backs off as told by Retry-After always gets through.
    """

    def __init__(self, window: float) -> None:
        self._window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self, now: float, limit: int) -> WindowDecision:
        with self._lock:
            horizon = now - self._window
            while self._times and self._times[0] <= horizon:
                self._times.popleft()
            if len(self._times) < limit:
                self._times.append(now)
                return WindowDecision(True, limit, limit - len(self._times), 0)
            # The slot frees when the (len - limit + 1)-th oldest admitted event leaves the window.
            oldest_blocking = self._times[len(self._times) - limit]
            wait = oldest_blocking + self._window - now
            return WindowDecision(False, limit, 0, max(1, math.ceil(wait)))
