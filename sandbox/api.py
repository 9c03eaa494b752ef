"""Routes of the ActiveCampaign API v3 the exporter uses (auth and rate limits are applied before)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any

from sandbox import shapes
from sandbox.bulk import BULK_PATH, BulkImports
from sandbox.faults import FaultQueue
from sandbox.limits import Limits
from sandbox.messages import ApiRequest, Reply, message, parse_json
from sandbox.model import SUBSCRIBED, UNSUBSCRIBED
from sandbox.state import SandboxState
from sandbox.validation import is_valid_email

_LIST = re.compile(r"/api/3/lists/(\d+)")
_FIELD_OPTIONS = re.compile(r"/api/3/fields/(\d+)/options")
_CONTACT_TAGS = re.compile(r"/api/3/contacts/(\d+)/contactTags")
_CONTACT_LISTS = re.compile(r"/api/3/contacts/(\d+)/contactLists")
_CONTACT_TAG = re.compile(r"/api/3/contactTags/(\d+)")
PAGE_DEFAULT = 20
PAGE_MAX = 100


def _unprocessable(title: str, code: str, pointer: str = "") -> Reply:
    error = {"title": title, "detail": "", "code": code, "source": {"pointer": pointer}}
    return Reply(422, {"errors": [error]}, outcome="invalid")


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


class Api:
    def __init__(
        self,
        state: SandboxState,
        limits: Callable[[], Limits],
        faults: FaultQueue,
        base_url: Callable[[], str],
    ) -> None:
        self._state = state
        self._base = base_url
        self._bulk = BulkImports(state, limits, faults)
        self._routes: dict[tuple[str, str], Callable[[ApiRequest], Reply]] = {
            ("GET", "/api/3/users/me"): self._me,
            ("GET", "/api/3/lists"): self._lists,
            ("GET", "/api/3/fields"): self._fields,
            ("GET", "/api/3/tags"): self._tags,
            ("GET", "/api/3/contacts"): self._contacts,
            ("POST", "/api/3/contact/sync"): self._contact_sync,
            ("POST", "/api/3/contactLists"): self._contact_lists,
            ("POST", "/api/3/contactTags"): self._add_contact_tag,
            ("POST", BULK_PATH): self._bulk.post,
            ("GET", "/api/3/import/info"): self._bulk.info,
        }

    def handle(self, request: ApiRequest) -> Reply:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        match = _LIST.fullmatch(request.path)
        if match and request.method == "GET":
            return self._list(int(match.group(1)))
        if request.method == "GET" and (match := _FIELD_OPTIONS.fullmatch(request.path)):
            return self._field_options(int(match.group(1)))
        if request.method == "GET" and (match := _CONTACT_LISTS.fullmatch(request.path)):
            return self._contact_lists_of(int(match.group(1)))
        if request.method == "GET" and (match := _CONTACT_TAGS.fullmatch(request.path)):
            return self._contact_tags(int(match.group(1)))
        if request.method == "DELETE" and (match := _CONTACT_TAG.fullmatch(request.path)):
            return self._remove_contact_tag(int(match.group(1)))
        return message(404, f"No Result found for route {request.method} {request.path}", outcome="not_found")

    # -- reads ----------------------------------------------------------------------------------

    def _me(self, request: ApiRequest) -> Reply:
        return Reply(200, {"user": shapes.user_json(self._base())})

    def _list(self, list_id: int) -> Reply:
        info = self._state.get_list(list_id)
        if info is None:
            return message(404, f"No Result found for _List with id {list_id}", outcome="not_found")
        return Reply(200, {"list": shapes.list_json(info, self._base())})

    @staticmethod
    def _page(request: ApiRequest, items: list[Any]) -> tuple[list[Any], dict[str, Any]]:
        limit = request.int_param("limit", PAGE_DEFAULT, maximum=PAGE_MAX) or PAGE_DEFAULT
        offset = request.int_param("offset", 0)
        # ActiveCampaign reports totals as strings.
        return items[offset : offset + limit], {"total": str(len(items))}

    def _lists(self, request: ApiRequest) -> Reply:
        name = request.param("filters[name]")
        lists = [info for info in self._state.lists() if name is None or info.name == name]
        page, meta = self._page(request, lists)
        base = self._base()
        return Reply(200, {"lists": [shapes.list_json(info, base) for info in page], "meta": meta})

    def _fields(self, request: ApiRequest) -> Reply:
        perstag = request.param("filters[perstag]")
        fields = [f for f in self._state.fields() if perstag is None or f.perstag == perstag]
        page, meta = self._page(request, fields)
        base = self._base()
        body: dict[str, Any] = {
            "fieldOptions": [option for f in page for option in shapes.field_options_json(f, base)],
            "fieldRels": [],
            "fields": [shapes.field_json(f, base) for f in page],
            "meta": meta,
        }
        if not self._state.field_options_sideload:
            del body["fieldOptions"]  # each field's links.options is the way to them
        return Reply(200, body)

    def _field_options(self, field_id: int) -> Reply:
        """GET /fields/{id}/options (a field's `links.options`): its options, fieldOption objects."""
        spec = next((f for f in self._state.fields() if f.id == field_id), None)
        if spec is None:
            return message(404, f"No Result found for Field with id {field_id}", outcome="not_found")
        return Reply(200, {"fieldOptions": shapes.field_options_json(spec, self._base())})

    def _contact_lists_of(self, contact_id: int) -> Reply:
        """GET /contacts/{id}/contactLists (a contact's `links.contactLists`): status and udate per list."""
        record = self._state.contact_by_id(contact_id)
        if record is None:
            return message(404, f"No Result found for Subscriber with id {contact_id}", outcome="not_found")
        base = self._base()
        items = [
            # This page's example and schema give the status as a string ("3").
            {**shapes.contact_list_json(record, lid, status, base, udate), "status": str(status)}
            for lid, status, udate in self._state.contact_lists(contact_id)
        ]
        return Reply(200, {"contactLists": items})

    def _contact_tags(self, contact_id: int) -> Reply:
        """GET /contacts/{id}/contactTags (a contact's `links.contactTags`)."""
        if self._state.contact_by_id(contact_id) is None:
            return message(404, f"No Result found for Subscriber with id {contact_id}", outcome="not_found")
        base = self._base()
        items = [
            shapes.contact_tag_json(ct, contact_id, tag_id, base)
            for ct, tag_id in self._state.contact_tags(contact_id)
        ]
        return Reply(200, {"contactTags": items})

    def _tags(self, request: ApiRequest) -> Reply:
        search = request.param("search")
        tags = [
            (i, name) for i, name in self._state.tags() if search is None or search.lower() in name.lower()
        ]
        page, meta = self._page(request, tags)
        base = self._base()
        return Reply(200, {"tags": [shapes.tag_json(i, name, base) for i, name in page], "meta": meta})

    def _contacts(self, request: ApiRequest) -> Reply:
        status = request.param("status")
        updated_after = request.param("filters[updated_after]")
        try:
            # The reference types it `format: date`; a time or another form is refused here.
            after = date.fromisoformat(updated_after) if updated_after is not None else None
        except ValueError:
            return message(400, "filters[updated_after] must be a date (YYYY-MM-DD).", outcome="invalid")
        if updated_after is not None and len(updated_after) != 10:
            return message(400, "filters[updated_after] must be a date (YYYY-MM-DD).", outcome="invalid")
        page, total = self._state.query_contacts(
            email=request.param("email"),
            list_id=_as_int(request.param("listid")),
            status=_as_int(status) if status not in (None, "-1") else None,
            id_greater=_as_int(request.param("id_greater")),
            updated_after=after,
            descending=(request.param("orders[id]") or "ASC").upper() == "DESC",
            offset=request.int_param("offset", 0),
            limit=request.int_param("limit", PAGE_DEFAULT, maximum=PAGE_MAX) or PAGE_DEFAULT,
        )
        base = self._base()
        contacts = [shapes.contact_json(c, base) for c in page]
        return Reply(200, {"scoreValues": [], "contacts": contacts, "meta": {"total": str(total)}})

    # -- per-contact writes -----------------------------------------------------------------------

    def _contact_sync(self, request: ApiRequest) -> Reply:
        try:
            doc = parse_json(request.body)
        except ValueError:
            return message(400, "Request body is not valid JSON.", outcome="invalid")
        contact = doc.get("contact") if isinstance(doc, dict) else None
        if not isinstance(contact, dict):
            return _unprocessable("The contact object is missing.", "field_missing", "/data/attributes")
        email = contact.get("email")
        if not isinstance(email, str) or not is_valid_email(email.strip().lower()):
            return _unprocessable("Email address is not valid.", "email_invalid", "/data/attributes/email")
        field_ids = self._state.field_ids()
        values: list[tuple[int, str]] = []
        for item in contact.get("fieldValues") or []:
            field_id = _as_int(item.get("field")) if isinstance(item, dict) else None
            if field_id is None or field_id not in field_ids:
                return _unprocessable(
                    "Custom field does not exist.", "field_invalid", "/data/attributes/fieldValues"
                )
            values.append((field_id, str(item.get("value", ""))))
        texts = {
            k: contact.get(k) if isinstance(contact.get(k), str) else None
            for k in ("firstName", "lastName", "phone")
        }
        record, created = self._state.sync_contact(
            email.strip().lower(),
            first_name=texts["firstName"],
            last_name=texts["lastName"],
            phone=texts["phone"],
            fields=values,
        )
        base = self._base()
        body = {
            "fieldValues": shapes.field_values_json(record, base),
            "contact": shapes.contact_json(record, base),
        }
        return Reply(201 if created else 200, body)

    def _add_contact_tag(self, request: ApiRequest) -> Reply:
        """POST /contactTags {"contactTag": {"contact", "tag"}} (create-contact-tag): 201, 404, 422."""
        try:
            doc = parse_json(request.body)
        except ValueError:
            return message(400, "Request body is not valid JSON.", outcome="invalid")
        link = doc.get("contactTag") if isinstance(doc, dict) else None
        link = link if isinstance(link, dict) else {}
        contact_id, tag_id = _as_int(link.get("contact")), _as_int(link.get("tag"))
        for name, value in (("contact", contact_id), ("tag", tag_id)):
            if value is None:
                error = {
                    "status": 422,
                    "title": "Missing attribute",
                    "source": {"pointer": f"/data/attributes/{name}"},
                }
                return Reply(422, {"errors": [error]}, outcome="invalid")
        assert contact_id is not None
        assert tag_id is not None
        for found, what in (
            (self._state.contact_by_id(contact_id), "Contact"),
            (self._state.tag_name(tag_id), "Tag"),
        ):
            if found is None:
                error = {"status": 404, "title": "Not Found", "detail": f"{what} not found"}
                return Reply(404, {"errors": [error]}, outcome="not_found")
        ct = self._state.add_contact_tag(contact_id, tag_id)
        return Reply(201, {"contactTag": shapes.contact_tag_json(ct, contact_id, tag_id, self._base())})

    def _remove_contact_tag(self, contact_tag_id: int) -> Reply:
        """DELETE /contactTags/{id} (remove-a-contacts-tag): 200 {} or 404."""
        if not self._state.remove_contact_tag(contact_tag_id):
            return message(
                404, f"No Result found for SubscriberTag with id {contact_tag_id}", outcome="not_found"
            )
        return Reply(200, {})

    def _contact_lists(self, request: ApiRequest) -> Reply:
        try:
            doc = parse_json(request.body)
        except ValueError:
            return message(400, "Request body is not valid JSON.", outcome="invalid")
        link = doc.get("contactList") if isinstance(doc, dict) else None
        if not isinstance(link, dict):
            return _unprocessable("The contactList object is missing.", "field_missing", "/data/attributes")
        list_id, contact_id, status = (_as_int(link.get(k)) for k in ("list", "contact", "status"))
        if list_id is None or self._state.get_list(list_id) is None:
            return _unprocessable(
                "The related list does not exist.", "related_missing", "/data/attributes/list"
            )
        if contact_id is None or self._state.contact_by_id(contact_id) is None:
            return _unprocessable(
                "The related contact does not exist.", "related_missing", "/data/attributes/contact"
            )
        if status not in (SUBSCRIBED, UNSUBSCRIBED):
            return _unprocessable("Status must be 1 or 2.", "field_invalid", "/data/attributes/status")
        record = self._state.set_membership(list_id, contact_id, status, sourceid=link.get("sourceid"))
        base = self._base()
        body = {
            "contacts": [shapes.contact_json(record, base)],
            "contactList": shapes.contact_list_json(record, list_id, status, base),
        }
        return Reply(200, body)
