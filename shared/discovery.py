"""What an ActiveCampaign account holds (lists, custom fields, tags), shaped for people and tools.

Pure: one page of ActiveCampaign's answer in, the API's shape out. ActiveCampaign sends ids and
totals as strings (read by the client's own rule, shared/activecampaign/wire.py); field options
arrive beside the fields (`fieldOptions`, each naming its field).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.activecampaign.wire import int_id

__all__ = ["PAGE_MAX", "RESOURCES", "field_views", "list_view", "page_view", "tag_view", "total_of"]

RESOURCES = ("lists", "fields", "tags")
PAGE_MAX = 100  # ActiveCampaign's largest page


def _items(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = body.get(key)
    if not isinstance(items, list):
        raise ValueError(f"ActiveCampaign answered GET /{key} without a {key!r} array")
    return [item for item in items if isinstance(item, Mapping)]


def total_of(body: Mapping[str, Any]) -> int | None:
    meta = body.get("meta")
    return int_id(meta.get("total")) if isinstance(meta, Mapping) else None


def list_view(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": int_id(item.get("id")),
        "name": str(item.get("name") or ""),
        "stringid": item.get("stringid"),
    }


def tag_view(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": int_id(item.get("id")), "name": str(item.get("tag") or ""), "type": item.get("tagType")}


def field_views(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    options: dict[int, list[dict[str, str]]] = {}
    raw_options = body.get("fieldOptions")
    for option in raw_options if isinstance(raw_options, list) else []:
        if not isinstance(option, Mapping):
            continue
        field_id = int_id(option.get("field"))
        if field_id is None:
            continue
        label = str(option.get("label") or option.get("value") or "")
        options.setdefault(field_id, []).append({"label": label, "value": str(option.get("value") or label)})
    views = []
    for item in _items(body, "fields"):
        field_id = int_id(item.get("id"))
        views.append(
            {
                "id": field_id,
                "perstag": str(item.get("perstag") or ""),
                "title": str(item.get("title") or ""),
                "type": str(item.get("type") or "text"),
                "options": options.get(field_id, []) if field_id is not None else [],
            }
        )
    return views


def page_view(resource: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    if resource == "fields":
        return field_views(body)
    if resource == "lists":
        return [list_view(item) for item in _items(body, "lists")]
    if resource == "tags":
        return [tag_view(item) for item in _items(body, "tags")]
    raise ValueError(f"not a discoverable resource: {resource!r}")
