"""The pipeline's RunContext for the current configuration (used by the timer and the worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from functions.services import Services
    from shared.config import Config
    from shared.pipeline import RunContext

__all__ = ["ACCOUNT_WAIT_SECONDS", "run_context"]

# How long a worker waits in-process for an account whose holder expects to be done by then: longer
# would keep the instance from work for other accounts; the queue's visibility delay covers the rest.
ACCOUNT_WAIT_SECONDS = 5.0


def run_context(svc: Services, config: Config) -> RunContext:
    # Imported here: the pipeline pulls in numpy and httpx, which cold starts should not pay for.
    from shared.pipeline import RunContext

    return RunContext(
        settings=svc.settings,
        config=config,
        secrets=svc.secrets,
        app_blobs=svc.app_blobs,
        segment_blobs=svc.segment_blobs,
        lease_seconds=svc.settings.run_lease_seconds,
        lease_wait=ACCOUNT_WAIT_SECONDS,
        run_queue=svc.run_queue,
    )
