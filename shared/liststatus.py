"""Reading a list's statuses from ActiveCampaign: everyone's (a Full refresh) or what changed since a time.

One job: walk GET /contacts by list and status (`orders[id]=ASC` + `id_greater`, 100 a page), each
page a request paced by the client like every other. Changes are found with the contacts
reference's `filters[updated_after]`, which takes a *day*: the walk asks from two days before the
last read (so no time zone of the account can hide a change) and keeps contacts whose `udate` is at
or after that read; the caller drops those whose status it already reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from shared.activecampaign import CONTACTS_PAGE_SIZE, ActiveCampaignClient, ListStatus

__all__ = [
    "BOUNCED",
    "STATUS_NAMES",
    "SUBSCRIBED",
    "UDATE_RESOLUTION",
    "UNSUBSCRIBED",
    "UPDATED_AFTER_MARGIN",
    "updated_at",
    "walk",
]

SUBSCRIBED, UNSUBSCRIBED, BOUNCED = 1, 2, 3
STATUS_NAMES = {SUBSCRIBED: "subscribed", UNSUBSCRIBED: "unsubscribed", BOUNCED: "bounced"}
# `filters[updated_after]` is a date in the account's time zone (UTC-12 .. UTC+14): asking from two
# days before the last read cannot miss a change, at the price of re-reading a day or two of them.
UPDATED_AFTER_MARGIN = timedelta(days=2)
UDATE_RESOLUTION = timedelta(seconds=1)


def updated_at(item: ListStatus) -> datetime | None:
    """The contact's `udate` as an aware time; None when ActiveCampaign sent none or an unreadable one."""
    try:
        moment = datetime.fromisoformat(item.updated)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def walk(
    client: ActiveCampaignClient, list_id: int, status: int, *, since: datetime | None = None
) -> Iterator[ListStatus]:
    """Contacts of the list with this status; with `since`, only those updated at or after it (one
    with no readable `udate` is kept: a change is never dropped for want of its time)."""
    day = (since - UPDATED_AFTER_MARGIN).date() if since is not None else None
    # `udate` has whole seconds: a change in the second the last read started must not be lost (the
    # caller drops what it reported already, so reading a second twice costs nothing).
    since = since.replace(microsecond=0) - UDATE_RESOLUTION if since is not None else None
    after = 0
    while True:
        page = client.list_status_page(list_id, status=status, updated_after=day, after_id=after)
        for item in page:
            moment = updated_at(item)
            if since is None or moment is None or moment >= since:
                yield item
        if len(page) < CONTACTS_PAGE_SIZE:
            return
        after = page[-1].contact_id
