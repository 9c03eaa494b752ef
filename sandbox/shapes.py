"""JSON shapes of ActiveCampaign objects, as its OpenAPI descriptions show them (ids as strings)."""

from __future__ import annotations

from typing import Any

from sandbox.model import ContactRecord, FieldSpec, ListInfo

JSON = dict[str, Any]


def _links(base: str, kind: str, ident: int, names: tuple[str, ...]) -> dict[str, str]:
    return {name: f"{base}/{kind}/{ident}/{name}" for name in names}


def list_json(info: ListInfo, base: str) -> JSON:
    return {
        "stringid": info.name.lower().replace(" ", "-"),
        "userid": "1",
        "name": info.name,
        "cdate": info.cdate,
        "p_use_tracking": "1",
        "p_use_analytics_read": "0",
        "p_use_analytics_link": "0",
        "p_use_twitter": "0",
        "p_use_facebook": "0",
        "p_embed_image": "1",
        "p_use_captcha": "1",
        "send_last_broadcast": "0",
        "private": "0",
        "analytics_domains": None,
        "analytics_source": "",
        "analytics_ua": "",
        "twitter_token": "",
        "twitter_token_secret": "",
        "facebook_session": None,
        "carboncopy": None,
        "subscription_notify": None,
        "unsubscription_notify": None,
        "require_name": "0",
        "get_unsubscribe_reason": "0",
        "to_name": "Subscriber",
        "optinoptout": "1",
        "sender_name": "",
        "sender_addr1": "",
        "sender_addr2": "",
        "sender_city": "",
        "sender_state": "",
        "sender_zip": "",
        "sender_country": "",
        "sender_phone": "",
        "sender_url": "http://127.0.0.1",
        "sender_reminder": "You are receiving this because you joined the sandbox list.",
        "fulladdress": "",
        "optinmessageid": "0",
        "optoutconf": "0",
        "deletestamp": None,
        "udate": None,
        "links": _links(base, "lists", info.id, ("contactGoalLists", "user", "addressLists")),
        "id": str(info.id),
        "user": "1",
    }


def tag_json(ident: int, name: str, base: str) -> JSON:
    return {
        "tagType": "contact",
        "tag": name,
        "description": "",
        "subscriber_count": "0",
        "cdate": "2024-01-01T00:00:00+00:00",
        "links": _links(base, "tags", ident, ("contactGoalTags",)),
        "id": str(ident),
    }


def contact_tag_json(ident: int, contact_id: int, tag_id: int, base: str) -> JSON:
    """A contactTag object, as the create-contact-tag answer shows it (ids as strings)."""
    return {
        "cdate": "2024-01-01T00:00:00-05:00",
        "contact": str(contact_id),
        "tag": str(tag_id),
        "links": {"contact": f"{base}/contactTags/{ident}/contact", "tag": f"{base}/contactTags/{ident}/tag"},
        "id": str(ident),
    }


def field_json(spec: FieldSpec, base: str) -> JSON:
    return {
        "title": spec.display_title,
        "descript": None,
        "type": spec.type,
        "isrequired": "0",
        "perstag": spec.perstag,
        "defval": None,
        "show_in_list": "0",
        "rows": "0",
        "cols": "0",
        "visible": "1",
        "service": "",
        "ordernum": str(spec.id),
        "cdate": "2024-01-01T00:00:00+00:00",
        "udate": "2024-01-01T00:00:00+00:00",
        "options": [str(option_id(spec, i)) for i in range(len(spec.options))],
        "relations": [],
        "links": _links(base, "fields", spec.id, ("options", "relations")),
        "id": str(spec.id),
    }


def option_id(spec: FieldSpec, index: int) -> int:
    return spec.id * 1000 + index + 1


def field_options_json(spec: FieldSpec, base: str) -> list[JSON]:
    """The `fieldOptions` GET /fields sideloads for one field (shape of the fieldOption/bulk answer)."""
    return [
        {
            "orderid": i + 1,
            "value": value,
            "label": value,
            "isdefault": 0,
            "field": str(spec.id),
            "cdate": "2024-01-01T00:00:00+00:00",
            "udate": "2024-01-01T00:00:00+00:00",
            "links": {"field": f"{base}/fieldOptions/{option_id(spec, i)}/field"},
            "id": str(option_id(spec, i)),
        }
        for i, value in enumerate(spec.options)
    ]


_CONTACT_LINKS = (
    "bounceLogs",
    "contactAutomations",
    "contactData",
    "contactGoals",
    "contactLists",
    "contactLogs",
    "contactTags",
    "contactDeals",
    "deals",
    "fieldValues",
    "geoIps",
    "notes",
    "organization",
    "plusAppend",
    "trackingLogs",
    "scoreValues",
)


def contact_json(record: ContactRecord, base: str) -> JSON:
    return {
        "cdate": record.cdate,
        "email": record.email,
        "phone": record.phone,
        "firstName": record.first_name,
        "lastName": record.last_name,
        "orgid": "0",
        "orgname": record.customer_acct_name,
        "segmentio_id": "",
        "bounced_hard": str(record.bounced_hard),
        "bounced_soft": "0",
        "bounced_date": record.bounced_date,
        "ip": "0",
        "ua": "",
        "hash": "",
        "socialdata_lastcheck": "0000-00-00 00:00:00",
        "email_local": "",
        "email_domain": "",
        "sentcnt": "0",
        "rating_tstamp": "0000-00-00",
        "gravatar": "0",
        "deleted": "0",
        "anonymized": "0",
        "adate": record.cdate,
        "udate": record.udate,
        "edate": record.udate,
        "deleted_at": "0000-00-00 00:00:00",
        "scoreValues": [],
        "links": _links(base, "contacts", record.id, _CONTACT_LINKS),
        "id": str(record.id),
    }


def field_values_json(record: ContactRecord, base: str) -> list[JSON]:
    return [
        {
            "contact": str(record.id),
            "field": str(field_id),
            "value": value,
            "cdate": record.cdate,
            "udate": record.udate,
            "created_by": None,
            "updated_by": None,
            "links": {
                "owner": f"{base}/fieldValues/{record.id}{field_id}/owner",
                "field": f"{base}/fieldValues/{record.id}{field_id}/field",
            },
            "id": f"{record.id}{field_id}",
            "owner": str(record.id),
        }
        for field_id, value in sorted(record.fields.items())
    ]


def contact_list_json(
    record: ContactRecord, list_id: int, status: int, base: str, udate: str | None = None
) -> JSON:
    return {
        "contact": str(record.id),
        "list": str(list_id),
        "form": None,
        "seriesid": "0",
        "sdate": record.cdate,
        "udate": udate or record.udate,
        "status": status,
        "responder": "1",
        "sync": "0",
        "unsubreason": "",
        "campaign": None,
        "message": None,
        "first_name": record.first_name,
        "last_name": record.last_name,
        "ip4Sub": "0",
        "sourceid": "0",
        "autosyncLog": None,
        "ip4_last": "0",
        "ip4Unsub": "0",
        "unsubscribeAutomation": None,
        "links": _links(base, "contactLists", record.id, ("automation", "list", "contact", "form")),
        "id": f"{list_id}{record.id}",
        "automation": None,
    }


def user_json(base: str) -> JSON:
    return {
        "username": "sandbox",
        "firstName": "Sandbox",
        "lastName": "User",
        "email": "owner@sandbox.invalid",
        "phone": "",
        "signature": None,
        "links": _links(base, "users", 1, ("lists", "userGroup", "dealGroupTotals", "configs")),
        "id": "1",
    }
