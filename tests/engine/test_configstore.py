import copy
import threading

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.config import ConfigError
from shared.configstore import (
    CONFIG_BLOB,
    ConfigSnapshot,
    ConfigStore,
    PreconditionFailed,
    StoredConfigInvalid,
    check_preconditions,
    item_etag,
)
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES

CONNECTION: dict[str, object] = {
    "displayName": "Acme",
    "hostname": "acme.api-us1.com",
    "apiKeySecret": "activecampaign-acme",
}


def export_doc(list_id: int = 1) -> dict[str, object]:
    return {
        "connection": "acme",
        "source": {"container": "segments", "segment": "vip"},
        "listId": list_id,
        "mapping": {"email": "Email"},
    }


@pytest.fixture
def container(azurite: str, unique_name: str) -> ContainerClient:
    client = BlobServiceClient.from_connection_string(azurite).get_container_client(unique_name)
    client.create_container()
    return client


@pytest.fixture
def store(container) -> ConfigStore:
    return ConfigStore(container, allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES, allow_loopback=True)


def put(kind: str, name: str, item: dict[str, object]):
    def change(snapshot: ConfigSnapshot) -> dict[str, object]:
        doc = copy.deepcopy(snapshot.document)
        doc[kind][name] = item
        return doc

    return change


def test_empty_store_reads_as_empty_config(store):
    snapshot = store.read()
    assert snapshot.blob_etag is None
    assert snapshot.config.connections == {}
    assert snapshot.document == {"connections": {}, "exports": {}}


def test_write_normalises_defaults_and_round_trips(store):
    store.update(put("connections", "acme", CONNECTION))
    written = store.update(put("exports", "vip", export_doc()))
    read = store.read()
    assert read.document == written.document
    assert read.config.exports["vip"].list_id == 1
    stored = read.item("exports", "vip")
    assert stored is not None
    assert stored["enabled"] is True
    assert stored["trigger"] == "onRefresh"
    assert stored["schedule"] is None


def test_item_etag_ignores_unrelated_edits_and_changes_with_the_item(store):
    store.update(put("connections", "acme", CONNECTION))
    store.update(put("exports", "vip", export_doc()))
    before = store.read().item_etag("exports", "vip")
    store.update(put("exports", "other", export_doc(2)))
    assert store.read().item_etag("exports", "vip") == before
    store.update(put("exports", "vip", export_doc(3)))
    assert store.read().item_etag("exports", "vip") != before


def test_invalid_change_is_rejected_and_nothing_is_written(store):
    with pytest.raises(ConfigError, match="unknown connection"):
        store.update(put("exports", "vip", export_doc()))
    assert store.read().blob_etag is None


def test_concurrent_unrelated_edits_are_all_kept(store):
    store.update(put("connections", "acme", CONNECTION))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        barrier.wait()
        try:
            store.update(put("exports", f"e{i}", export_doc(i + 1)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(store.read().config.exports) == ["e0", "e1", "e2", "e3"]


def test_hand_broken_blob_is_reported_with_what_to_fix(store, container):
    container.upload_blob(CONFIG_BLOB, '{"connections": {"Bad Name": {}}}')
    with pytest.raises(StoredConfigInvalid, match="Bad Name"):
        store.read()


def test_preconditions():
    item = {"a": 1}
    tag = item_etag(item)
    check_preconditions(item, if_match=tag, if_none_match=None, what="export 'x'")
    check_preconditions(item, if_match="*", if_none_match=None, what="export 'x'")
    check_preconditions(None, if_match=None, if_none_match="*", what="export 'x'")
    with pytest.raises(PreconditionFailed, match="changed by someone else"):
        check_preconditions({"a": 2}, if_match=tag, if_none_match=None, what="export 'x'")
    with pytest.raises(PreconditionFailed, match="does not exist"):
        check_preconditions(None, if_match=tag, if_none_match=None, what="export 'x'")
    with pytest.raises(PreconditionFailed, match="already exists"):
        check_preconditions(item, if_match=None, if_none_match="*", what="export 'x'")
