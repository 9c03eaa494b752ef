"""The segment reader (shared/segments.py, real model.json files): unit unless a test uses Azurite."""

from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.support.kinds import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, "unit")


# The reader's tests share these: a blob service on the worker's Azurite, and a fresh container.


@pytest.fixture
def service(azurite: str) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite)


@pytest.fixture
def container(service: BlobServiceClient, unique_name: str) -> ContainerClient:
    client = service.get_container_client(unique_name)
    client.create_container()
    return client
