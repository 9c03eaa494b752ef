"""The background importer: applies queued batches in order, like ActiveCampaign's async import."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sandbox.limits import Limits
from sandbox.state import SandboxState


class BatchWorker(threading.Thread):
    def __init__(self, state: SandboxState, limits: Callable[[], Limits], stopping: threading.Event) -> None:
        super().__init__(name="sandbox-batch-worker", daemon=True)
        self._state = state
        self._limits = limits
        self._stopping = stopping

    def run(self) -> None:
        while True:
            batch = self._state.next_batch(self._stopping)
            if batch is None:
                return
            hold = batch.posted_at + self._limits().processing_delay - time.monotonic()
            # The processing delay is simulated latency, spent in `claimed` as at ActiveCampaign, and
            # waited on the stop event so stop() is prompt.
            if hold > 0:
                self._state.claim(batch)
                if self._stopping.wait(hold):
                    return
            self._state.process_batch(batch)
