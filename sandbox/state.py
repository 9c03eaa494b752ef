"""The sandbox account: lists, fields, contacts, memberships, queued batches, and what was served.

Everything sits behind one re-entrant lock; `changed` (a Condition on it) wakes the batch worker
and whoever waits for the queue to drain.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sandbox.limits import max_in_window
from sandbox.model import (
    BOUNCED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    Batch,
    BatchOutcome,
    ContactRecord,
    FieldSpec,
    ListInfo,
    RequestRecord,
    now_iso,
)
from sandbox.validation import ImportContact, stored_field_value


class SandboxState:
    def __init__(
        self,
        lists: Mapping[int, str],
        fields: Sequence[FieldSpec],
        *,
        time_zone: str = "UTC",
        field_options_sideload: bool = True,
    ) -> None:
        self._lock = threading.RLock()
        # The account's time zone (Settings > Account): date-times are stored as its local time.
        self.time_zone = ZoneInfo(time_zone)
        # Whether GET /fields sideloads `fieldOptions` (False: only GET /fields/{id}/options has them).
        self.field_options_sideload = field_options_sideload
        self.changed = threading.Condition(self._lock)
        self._lists = {int(i): ListInfo(int(i), name, now_iso()) for i, name in lists.items()}
        self._fields = {f.id: f for f in sorted(fields, key=lambda f: f.id)}
        if len(self._fields) != len(fields):
            raise ValueError("custom field ids must be unique")
        self._contacts: dict[str, ContactRecord] = {}
        self._by_id: dict[int, ContactRecord] = {}
        self._members: dict[int, dict[str, int]] = {i: {} for i in self._lists}
        # (list id, email) -> when that membership's status last changed (a contactList's `udate`).
        self._member_udate: dict[tuple[int, str], str] = {}
        self._opted_out: dict[int, set[str]] = {i: set() for i in self._lists}
        self._exclusions: set[str] = set()
        self._batches: dict[str, Batch] = {}
        self._queue: deque[Batch] = deque()
        self._paused = False
        self._log: list[RequestRecord] = []
        self._counters: Counter[str] = Counter()
        # (list id, email): a status 2 turned back into 1 (only POST /contactLists can do that).
        self._resubscriptions: list[tuple[int, str]] = []
        # (list id, email): bulk subscribes refused because the person had unsubscribed.
        self._refused: list[tuple[int, str]] = []
        # The account's tags (ActiveCampaign creates one the first time an import names it): name -> id.
        self._tags: dict[str, int] = {}
        # contactTag id -> (contact id, tag id): who has which tag (GET /contacts/{id}/contactTags), and
        # contact id -> {tag id: contactTag id}, so tagging a contact costs the same at any size.
        self._contact_tags: dict[int, tuple[int, int]] = {}
        self._tags_of: dict[int, dict[int, int]] = {}
        self._tag_names: dict[int, str] = {}
        self._next_contact_tag = 1
        # (list id, email, sourceid sent): each re-subscribe, with the sourceid the reference asks for (4).
        self._resubscribe_sources: list[tuple[int, str, object]] = []
        # Route prefix -> the action a permission 403 names ("view lists"): see deny().
        self._denied: dict[str, str] = {}

    # -- account data -------------------------------------------------------------------------

    def lists(self) -> list[ListInfo]:
        with self._lock:
            return list(self._lists.values())

    def get_list(self, list_id: int) -> ListInfo | None:
        with self._lock:
            return self._lists.get(list_id)

    def fields(self) -> list[FieldSpec]:
        with self._lock:
            return list(self._fields.values())

    def tags(self) -> list[tuple[int, str]]:
        """(id, name) of every tag, in the order they were created."""
        with self._lock:
            return [(ident, name) for name, ident in self._tags.items()]

    def tag_name(self, tag_id: int) -> str | None:
        with self._lock:
            return self._tag_names.get(tag_id)

    def _tag_id(self, name: str) -> int:
        """The tag's id, creating the tag when the account has none of that name (as imports do)."""
        tag_id = self._tags.get(name)
        if tag_id is None:
            tag_id = self._tags[name] = len(self._tags) + 1
            self._tag_names[tag_id] = name
        return tag_id

    def contact_tags(self, contact_id: int) -> list[tuple[int, int]]:
        """(contactTag id, tag id) of one contact's tags, oldest first."""
        with self._lock:
            return sorted((ct, tag) for tag, ct in self._tags_of.get(contact_id, {}).items())

    def add_contact_tag(self, contact_id: int, tag_id: int) -> int:
        """POST /contactTags: the contactTag id (the existing one when the contact has the tag)."""
        with self._lock:
            held = self._tags_of.setdefault(contact_id, {})
            if tag_id in held:
                return held[tag_id]
            ct = held[tag_id] = self._next_contact_tag
            self._next_contact_tag += 1
            self._contact_tags[ct] = (contact_id, tag_id)
            self._by_id[contact_id].tags.add(self._tag_names[tag_id])
            return ct

    def remove_contact_tag(self, contact_tag_id: int) -> bool:
        """DELETE /contactTags/{id}: False when there is no such contactTag."""
        with self._lock:
            link = self._contact_tags.pop(contact_tag_id, None)
            if link is None:
                return False
            contact_id, tag_id = link
            del self._tags_of[contact_id][tag_id]
            self._by_id[contact_id].tags.discard(self._tag_names[tag_id])
            return True

    def tag_contact(self, email: str, tag: str) -> None:
        """Someone else (a form, an automation, a person) tags a contact: the test's "other" tags."""
        with self._lock:
            record = self._upsert(email.strip().lower())
            self.add_contact_tag(record.id, self._tag_id(tag))

    def field_ids(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._fields)

    def list_ids(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._lists)

    def list_members(self, list_id: int) -> dict[str, int]:
        """email -> status (1 subscribed, 2 unsubscribed) of everyone ever put on the list."""
        with self._lock:
            return dict(self._members.get(list_id, {}))

    def contact(self, email: str) -> ContactRecord | None:
        with self._lock:
            record = self._contacts.get(email.strip().lower())
            return record.snapshot() if record else None

    def contact_by_id(self, contact_id: int) -> ContactRecord | None:
        with self._lock:
            record = self._by_id.get(contact_id)
            return record.snapshot() if record else None

    def contacts(self) -> list[ContactRecord]:
        """Every contact, by ascending id, with field values (by field id) and tags."""
        with self._lock:
            return [c.snapshot() for c in self._by_id.values()]

    def query_contacts(
        self,
        *,
        email: str | None = None,
        list_id: int | None = None,
        status: int | None = None,
        id_greater: int | None = None,
        updated_after: date | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[list[ContactRecord], int]:
        """GET /contacts: one page of matching contacts (copies) and the total number of matches."""
        with self._lock:
            if email is not None:
                found = self._contacts.get(email.strip().lower())
                matches = [found] if found else []
            elif list_id is not None:
                members = self._members.get(list_id, {})
                matches = sorted((self._contacts[e] for e in members), key=lambda c: c.id)
            else:
                matches = list(self._by_id.values())
            if list_id is not None or status is not None:
                matches = [c for c in matches if self._member_matches(c.email, list_id, status)]
            if id_greater is not None:
                matches = [c for c in matches if c.id > id_greater]
            if updated_after is not None:
                # "updated after this date" (a date, no time): strictly after that day in the
                # account's time zone, so a caller wanting that day's changes must ask for the day before.
                matches = [c for c in matches if self._local_day(c.udate) > updated_after]
            if descending:
                matches.reverse()
            return [c.snapshot() for c in matches[offset : offset + limit]], len(matches)

    def _member_matches(self, email: str, list_id: int | None, status: int | None) -> bool:
        if list_id is not None:
            current = self._members.get(list_id, {}).get(email)
            return current is not None and (status is None or current == status)
        return any(m.get(email) == status for m in self._members.values())

    def _local_day(self, iso: str) -> date:
        return datetime.fromisoformat(iso).astimezone(self.time_zone).date()

    def contact_lists(self, contact_id: int) -> list[tuple[int, int, str]]:
        """GET /contacts/{id}/contactLists: (list id, status, udate) of each list the contact is on."""
        with self._lock:
            record = self._by_id.get(contact_id)
            if record is None:
                return []
            return [
                (lid, m[record.email], self._member_udate.get((lid, record.email), record.udate))
                for lid, m in sorted(self._members.items())
                if record.email in m
            ]

    def _set_member(self, list_id: int, record: ContactRecord, status: int) -> None:
        """A list status as ActiveCampaign keeps it; a change stamps the membership and the contact."""
        members = self._members[list_id]
        if members.get(record.email) != status:
            now = now_iso()
            self._member_udate[(list_id, record.email)] = now
            record.udate = now
        members[record.email] = status

    def bounce(self, email: str) -> ContactRecord:
        """The address hard-bounces: the contact's bounce fields are set and each list it is subscribed
        to shows it as bounced (status 3)."""
        with self._lock:
            record = self._contacts.get(email.strip().lower())
            if record is None:
                raise KeyError("no such contact")
            record.bounced_hard += 1
            record.bounced_date = datetime.now(UTC).date().isoformat()
            for lid, members in self._members.items():
                if members.get(record.email) == SUBSCRIBED:
                    self._set_member(lid, record, BOUNCED)
            return record.snapshot()

    def memberships_of(self, email: str) -> dict[int, int]:
        with self._lock:
            email = email.lower()
            return {lid: m[email] for lid, m in self._members.items() if email in m}

    def add_list(self, list_id: int, name: str) -> None:
        with self._lock:
            self._lists[list_id] = ListInfo(list_id, name, now_iso())
            self._members.setdefault(list_id, {})
            self._opted_out.setdefault(list_id, set())

    def opt_out(self, list_id: int, email: str) -> None:
        """The person unsubscribes themselves from the list (creating the contact if unknown)."""
        with self._lock:
            if list_id not in self._lists:
                raise KeyError(f"no list {list_id}")
            record = self._upsert(email.strip().lower())
            self._set_member(list_id, record, UNSUBSCRIBED)
            self._opted_out[list_id].add(record.email)

    def opted_out(self, list_id: int) -> set[str]:
        with self._lock:
            return set(self._opted_out.get(list_id, set()))

    @property
    def resubscriptions(self) -> list[tuple[int, str]]:
        """(list, email) whose status went from unsubscribed back to subscribed: must stay empty."""
        with self._lock:
            return list(self._resubscriptions)

    @property
    def resubscribe_sources(self) -> list[tuple[int, str, object]]:
        """(list, email, sourceid as sent) of each re-subscribe: the reference asks for sourceid 4."""
        with self._lock:
            return list(self._resubscribe_sources)

    def deny(self, path_prefix: str, action: str) -> None:
        """Requests under `path_prefix` (e.g. "/api/3/lists") get a permission 403 naming `action`."""
        with self._lock:
            self._denied[path_prefix] = action

    def allow_all(self) -> None:
        with self._lock:
            self._denied.clear()

    def denied_action(self, path: str) -> str | None:
        with self._lock:
            return next((a for prefix, a in self._denied.items() if path.startswith(prefix)), None)

    @property
    def refused_resubscribes(self) -> list[tuple[int, str]]:
        """(list, email) a bulk import asked to subscribe although they had unsubscribed."""
        with self._lock:
            return list(self._refused)

    def set_exclusions(self, emails: Iterable[str]) -> None:
        """The account's exclusion list: bulk imports skip these and report them in `failure`."""
        with self._lock:
            self._exclusions = {e.strip().lower() for e in emails}

    def exclusions(self) -> set[str]:
        with self._lock:
            return set(self._exclusions)

    # -- contact writes -------------------------------------------------------------------------

    def _upsert(self, email: str) -> ContactRecord:
        record = self._contacts.get(email)
        if record is None:
            record = ContactRecord(id=len(self._by_id) + 1, email=email)
            self._contacts[email] = record
            self._by_id[record.id] = record
        return record

    def sync_contact(
        self,
        email: str,
        *,
        first_name: str | None,
        last_name: str | None,
        phone: str | None,
        fields: Sequence[tuple[int, str]],
    ) -> tuple[ContactRecord, bool]:
        """POST /contact/sync: upsert by email; returns (copy, created)."""
        with self._lock:
            email = email.lower()
            created = email not in self._contacts
            record = self._upsert(email)
            self._set_details(record, first_name, last_name, phone, None, self._stored(fields), ())
            return record.snapshot(), created

    def set_membership(
        self, list_id: int, contact_id: int, status: int, *, sourceid: object = None
    ) -> ContactRecord:
        """POST /contactLists: like ActiveCampaign, status 1 re-subscribes even someone who left."""
        with self._lock:
            record = self._by_id[contact_id]
            members = self._members[list_id]
            if status == SUBSCRIBED and members.get(record.email) == UNSUBSCRIBED:
                self._resubscriptions.append((list_id, record.email))
                self._resubscribe_sources.append((list_id, record.email, sourceid))
                self._opted_out[list_id].discard(record.email)
            self._set_member(list_id, record, status)
            return record.snapshot()

    @staticmethod
    def _set_details(
        record: ContactRecord,
        first_name: str | None,
        last_name: str | None,
        phone: str | None,
        account: str | None,
        fields: Iterable[tuple[int, str]],
        tags: Iterable[str],
    ) -> None:
        if first_name is not None:
            record.first_name = first_name
        if last_name is not None:
            record.last_name = last_name
        if phone is not None:
            record.phone = phone
        if account is not None:
            record.customer_acct_name = account
        record.fields.update(fields)
        record.tags.update(tags)
        record.udate = now_iso()

    def _stored(self, fields: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
        """Field values as the account keeps them (date-times in its time zone)."""
        return [
            (
                fid,
                stored_field_value(self._fields[fid], value, self.time_zone)
                if fid in self._fields
                else value,
            )
            for fid, value in fields
        ]

    def _apply_contact(self, contact: ImportContact) -> ContactRecord:
        record = self._upsert(contact.email)
        self._set_details(
            record,
            contact.first_name,
            contact.last_name,
            contact.phone,
            contact.customer_acct_name,
            self._stored(contact.fields),
            (),
        )
        for tag in contact.tags:
            self.add_contact_tag(record.id, self._tag_id(tag))
        for list_id in contact.subscribe:
            members = self._members[list_id]
            if members.get(record.email) == UNSUBSCRIBED:
                # "Contacts may not be subscribed to lists which they have previously unsubscribed from."
                self._refused.append((list_id, record.email))
            elif members.get(record.email) != BOUNCED:  # a bounced address stays bounced
                self._set_member(list_id, record, SUBSCRIBED)
        for list_id in contact.unsubscribe:
            self._set_member(list_id, record, UNSUBSCRIBED)
        return record

    # -- batches --------------------------------------------------------------------------------

    def queue_batch(
        self,
        contacts: list[ImportContact],
        *,
        exclude_automations: bool,
        callback: object | None,
        posted_at: float,
        outcome: BatchOutcome = "completed",
        applied_before_interrupt: int | None = None,
        stray_failures: list[str] | None = None,
    ) -> Batch:
        with self._lock:
            batch = Batch(
                batch_id=str(uuid.uuid4()),
                contacts=contacts,
                exclude_automations=exclude_automations,
                callback=callback,
                posted_at=posted_at,
                outcome=outcome,
                applied_before_interrupt=applied_before_interrupt,
                stray_failures=list(stray_failures or ()),
            )
            self._batches[batch.batch_id] = batch
            self._queue.append(batch)
            self._counters["batches_queued"] += 1
            self._counters["contacts_queued"] += len(contacts)
            self.changed.notify_all()
            return batch

    def get_batch(self, batch_id: str) -> Batch | None:
        with self._lock:
            return self._batches.get(batch_id)

    def batches(self) -> list[Batch]:
        with self._lock:
            return list(self._batches.values())

    def wait_for_batches(self, count: int, timeout: float) -> bool:
        """True once at least `count` batches were queued in total; False after `timeout` seconds."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self._batches) >= count, timeout)

    def next_batch(self, stopping: threading.Event) -> Batch | None:
        """Block until a batch is queued (returns it, still queued) or `stopping` is set (None)."""
        with self.changed:
            self.changed.wait_for(lambda: (bool(self._queue) and not self._paused) or stopping.is_set())
            return None if stopping.is_set() else self._queue[0]

    def set_paused(self, paused: bool) -> None:
        """Hold queued batches in `waiting` (paused) or let the worker apply them again."""
        with self.changed:
            self._paused = paused
            self.changed.notify_all()

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def claim(self, batch: Batch) -> None:
        """The importer took the batch (import/info says `claimed` while it waits out its delay)."""
        with self.changed:
            batch.status = "claimed"
            self.changed.notify_all()

    def process_batch(self, batch: Batch) -> None:
        """Apply a batch as ActiveCampaign's importer would, then mark it done and notify waiters."""
        with self.changed:
            batch.status = "active"
            if batch.outcome == "failed":
                todo: list[ImportContact] = []
            elif batch.outcome == "interrupted":
                cut = batch.applied_before_interrupt
                todo = batch.contacts[: len(batch.contacts) // 2 if cut is None else cut]
            else:
                todo = batch.contacts
            for contact in todo:
                if contact.email in self._exclusions:
                    batch.failure.append(contact.email)
                    continue
                batch.success.append(self._apply_contact(contact).id)
            batch.failure.extend(batch.stray_failures)
            self._counters["contacts_applied"] += len(batch.success)
            batch.status = batch.outcome
            self._queue.popleft()
            self.changed.notify_all()

    def idle(self) -> bool:
        with self._lock:
            return not self._queue

    def wait_until_idle(self, timeout: float) -> bool:
        """True once every queued batch is processed; False if `timeout` seconds pass first."""
        with self.changed:
            return self.changed.wait_for(lambda: not self._queue, timeout)

    # -- request log and counters ------------------------------------------------------------------

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self._log.append(entry)
            self._counters["requests"] += 1
            self._counters[f"outcome:{entry.outcome}"] += 1

    def count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def requests(self, path_prefix: str = "", *, method: str | None = None) -> list[RequestRecord]:
        """Logged requests (oldest first) whose path starts with `path_prefix`."""
        with self._lock:
            return [
                r
                for r in self._log
                if r.path.startswith(path_prefix) and (method is None or r.method == method)
            ]

    def counters(self) -> dict[str, int]:
        """Totals: requests, rate_limited (429s from the limiter), bulk_rate_limited (400s), ..."""
        with self._lock:
            outcomes = self._counters
            return {
                "requests": outcomes["requests"],
                "rate_limited": outcomes["outcome:rate_limited"],
                "bulk_rate_limited": outcomes["outcome:bulk_rate_limited"],
                "forbidden": outcomes["outcome:forbidden"],
                "faults": outcomes["delayed"]
                + sum(v for k, v in outcomes.items() if k.startswith("outcome:fault:")),
                "batches_queued": outcomes["batches_queued"],
                "contacts_queued": outcomes["contacts_queued"],
                "contacts_applied": outcomes["contacts_applied"],
                "pending_batches": len(self._queue),
                "resubscriptions": len(self._resubscriptions),
                "refused_resubscribes": len(self._refused),
            }

    def peak_in_window(
        self, window: float, path_prefix: str = "/api/3/", *, outcome: str | None = None
    ) -> int:
        """Most logged requests (all, or only those with `outcome`) inside any `window` seconds.

        Counts what the client sent, refused or not: a polite client keeps this at or under the limit.
        """
        return max_in_window(
            (r.at for r in self.requests(path_prefix) if outcome is None or r.outcome == outcome), window
        )
