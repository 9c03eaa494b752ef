"""docs/openapi.yaml checked against the running app by Schemathesis, a tool nobody here wrote.

scripts.serve runs the real function_app.py against Azurite and the sandbox, with a connection and
an export in place so reads find something. Schemathesis generates requests for every documented
operation (a bounded number of examples each, derandomized so a run is repeatable) and checks
that no response is a server error and that every status code, content type, header and body is
the one the document declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.sandbox import SANDBOX_API_KEY, fast_limits
from tests.fixtures.serve import Served, base_env, start_serve
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_OPERATION = 8
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def app(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from azure.storage.blob import BlobServiceClient

    from sandbox import SandboxServer
    from tests.fixtures.sandbox import SANDBOX_FIELDS, SANDBOX_LISTS

    sandbox = SandboxServer(SANDBOX_API_KEY, limits=fast_limits(), lists=SANDBOX_LISTS, fields=SANDBOX_FIELDS)
    sandbox.start()
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.get_container_client("contract-segments")
    if not container.exists():
        container.create_container()
    write_ci_snapshot(container, "Vip", profiles(20))
    served = start_serve(base_env(azurite), tmp_path_factory.mktemp("contract") / "serve.log")
    try:
        with httpx.Client(base_url=served.api, timeout=30) as client:
            body: dict[str, Any] = {
                "displayName": "Sandbox",
                "hostname": sandbox.hostname,
                "dataPrivacyConsent": True,
                "apiKey": SANDBOX_API_KEY,
            }
            assert client.put("/connections/main", json=body).status_code in (200, 201)
            export = {
                "connection": "main",
                "source": {"container": "contract-segments", "folder": FOLDER, "segment": "Vip"},
                "listId": 1,
                "mapping": {"email": "EmailAddress"},
                "trigger": "manual",
            }
            assert client.put("/exports/vip", json=export).status_code in (200, 201)
        yield served
    finally:
        served.stop()
        sandbox.stop()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], app: Served) -> None:
    case.call_and_validate(base_url=app.url, checks=CHECKS, timeout=30)
