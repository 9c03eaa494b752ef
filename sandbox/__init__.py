"""A local stand-in for ActiveCampaign's API v3: real HTTP on loopback, documented limits and errors.

Used by the client, pipeline and function-app tests, the demo and the throughput benchmark.
"""

from sandbox.faults import Fault
from sandbox.limits import Limits
from sandbox.model import SUBSCRIBED, UNSUBSCRIBED, Batch, ContactRecord, FieldSpec, RequestRecord
from sandbox.server import SandboxServer
from sandbox.state import SandboxState

__all__ = [
    "SUBSCRIBED",
    "UNSUBSCRIBED",
    "Batch",
    "ContactRecord",
    "Fault",
    "FieldSpec",
    "Limits",
    "RequestRecord",
    "SandboxServer",
    "SandboxState",
]
