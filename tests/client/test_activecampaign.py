"""ActiveCampaignClient: unit tests over an in-process transport, then over real HTTP to the sandbox."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from sandbox import Fault, Limits, SandboxServer
from shared.activecampaign import (
    MAX_BULK_BODY_BYTES,
    ActiveCampaignClient,
    ActiveCampaignError,
    BulkImportRejected,
    InvalidApiKey,
    ListNotFound,
    Pacer,
    Unavailable,
    UnexpectedResponse,
    client_for,
)
from shared.hosts import HostError
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES, load_settings
from tests.fixtures.sandbox import (
    CITY_FIELD_ID,
    LOYALTY_TIER_FIELD_ID,
    NEWSLETTER_LIST_ID,
    SANDBOX_API_KEY,
    SANDBOX_FIELDS,
    MakeSandbox,
    fast_limits,
)
from tests.support.reference import REFERENCE

HOST = "acme.api-us1.com"
KEY = "k3y-ab12cd34ef56-secret"
Handler = Callable[[httpx.Request], httpx.Response]


def _bulk_schema() -> dict[str, Any]:
    spec = yaml.safe_load((REFERENCE / "activecampaign-openapi-bulk-import.yml").read_text())
    op = spec["paths"]["/import/bulk_import"]["post"]
    schema: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
    return schema


BULK_VALIDATOR = OAS30Validator(_bulk_schema())


class Recorder:
    """A MockTransport handler answering from a script and keeping every request it saw."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def free_pacer(**kwargs: Any) -> Pacer:
    """A pacer that never actually sleeps, so unit tests measure the client, not the pacing."""
    options: dict[str, Any] = {"single_imports_per_minute": 100_000.0, "sleep": lambda _s: None}
    return Pacer(1000.0, 100_000.0, **(options | kwargs))


def make_client(handler: Recorder, *, sleep: Sleeps | None = None, **kwargs: Any) -> ActiveCampaignClient:
    options: dict[str, Any] = {
        "pacer": free_pacer(),
        "allowed_suffixes": DEFAULT_ALLOWED_HOST_SUFFIXES,
        "allow_loopback": False,
        "transport": httpx.MockTransport(handler),
        "sleep": sleep or Sleeps(),
        "max_attempts": 4,
    }
    options.update(kwargs)
    return ActiveCampaignClient(HOST, KEY, **options)


def ok(body: object, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def contact(i: int, **extra: Any) -> dict[str, Any]:
    return {"email": f"person{i}@example.com", "subscribe": [{"listid": "1"}], **extra}


QUEUED = ok({"success": 1, "queued_contacts": 1, "batchId": "b-1", "message": "Contact import queued"})


# -------------------------------------------------------------------------------- unit: transport


def test_a_client_cannot_be_built_for_a_host_outside_activecampaign():
    with pytest.raises(HostError):
        ActiveCampaignClient(
            "acme.example.com",
            KEY,
            pacer=free_pacer(),
            allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES,
            allow_loopback=False,
        )


def test_requests_go_over_https_with_the_api_token_header():
    recorder = Recorder(ok({"user": {"id": "1", "username": "admin"}}))
    with make_client(recorder) as client:
        user = client.check_connection()
    assert user["username"] == "admin"
    request = recorder.requests[0]
    assert str(request.url) == f"https://{HOST}/api/3/users/me"
    assert request.headers["Api-Token"] == KEY


def test_set_api_key_sends_the_new_key_from_then_on():
    recorder = Recorder(ok({"user": {"id": "1"}}))
    with make_client(recorder) as client:
        client.set_api_key("rotated-key")
        client.check_connection()
    assert recorder.requests[0].headers["Api-Token"] == "rotated-key"


@pytest.mark.parametrize("bad", ["", "   ", "abc\r\nX-Injected: 1"])
def test_an_unusable_key_is_refused_without_echoing_it(bad):
    with make_client(Recorder(ok({}))) as client, pytest.raises(ValueError, match="API key") as info:
        client.set_api_key(bad)
    assert "Injected" not in str(info.value)


def test_a_redirect_is_an_error_and_is_not_followed():
    recorder = Recorder(httpx.Response(302, headers={"Location": "https://collector.example.net/steal"}))
    with make_client(recorder) as client, pytest.raises(UnexpectedResponse, match=r"collector\.example\.net"):
        client.check_connection()
    assert len(recorder.requests) == 1


def test_an_html_page_with_200_is_not_success():
    page = httpx.Response(200, text="<html>Login</html>", headers={"Content-Type": "text/html"})
    with make_client(Recorder(page)) as client, pytest.raises(UnexpectedResponse, match="text/html"):
        client.get_list(1)


# -------------------------------------------------------------------------------- unit: errors


def test_403_says_the_key_is_wrong_or_revoked_and_where_to_get_one_without_the_key():
    echo = ok({"message": f"You are not authorized to access this resource with {KEY}"}, 403)
    with make_client(Recorder(echo)) as client, pytest.raises(InvalidApiKey) as info:
        client.check_connection()
    text = str(info.value)
    assert "wrong or has been revoked" in text
    assert "Settings > Developer" in text
    assert KEY not in text


def test_404_on_a_list_names_the_list():
    missing = ok({"message": "No Result found for _List with id 7"}, 404)
    with make_client(Recorder(missing)) as client, pytest.raises(ListNotFound, match="list 7") as info:
        client.get_list(7)
    assert info.value.list_id == 7


def test_422_errors_are_surfaced_as_their_categories_and_pointers():
    body = {
        "errors": [
            {
                "title": "Email address already exists in the system.",
                "code": "duplicate",
                "source": {"pointer": "/data/attributes/email"},
            }
        ]
    }
    recorder = Recorder(ok(body, 422))
    expected = "duplicate at /data/attributes/email"
    with make_client(recorder) as client, pytest.raises(ActiveCampaignError, match=expected) as info:
        client.check_connection()
    assert info.value.status == 422
    assert len(recorder.requests) == 1  # a 4xx is not retried


def test_other_4xx_surface_the_messages_category_and_are_not_retried():
    recorder = Recorder(ok({"message": "Something is off"}, 400))
    with make_client(recorder) as client, pytest.raises(ActiveCampaignError, match="unrecognised reason"):
        client.get_list(1)
    assert len(recorder.requests) == 1


def test_bulk_400_with_failure_reasons_gives_every_index_and_masks_emails():
    body = {
        "success": 0,
        "message": "JSON payload did not pass validation.",
        "failureReasons": [
            {"contact": 1, "failureReason": "Field 'email' incorrect format: alice@example.com"},
            {"contact": 3, "failureReason": "Duplicate email"},
        ],
    }
    recorder = Recorder(ok(body, 400))
    with make_client(recorder) as client, pytest.raises(BulkImportRejected) as info:
        client.bulk_import([contact(i) for i in range(4)])
    assert info.value.failures == [(1, "invalid email (field email)"), (3, "duplicate")]
    assert "alice" not in str(info.value)
    assert len(recorder.requests) == 1


# -------------------------------------------------------------------------------- unit: bodies


def test_bulk_body_matches_the_published_schema_with_automations_flag():
    recorder = Recorder(QUEUED)
    rich = {
        "email": "jane@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "phone": "+31 20 123 4567",
        "tags": ["vip"],
        "fields": [{"id": 1, "value": "gold"}, {"id": 2, "value": "||a||b||"}],
        "subscribe": [{"listid": 1}],  # an int list id is sent as the string the schema declares
        "unsubscribe": [{"listid": "3"}],
    }
    with make_client(recorder) as client:
        queued = client.bulk_import([rich, contact(2)], exclude_automations=True)
    assert queued.batch_id == "b-1"
    sent = json.loads(recorder.requests[0].content)
    BULK_VALIDATOR.validate(sent)
    assert sent["exclude_automations"] is True
    assert sent["contacts"][0]["subscribe"] == [{"listid": "1"}]
    assert recorder.requests[0].headers["Content-Type"] == "application/json"


def test_more_than_250_contacts_is_refused_before_sending():
    recorder = Recorder(QUEUED)
    with make_client(recorder) as client, pytest.raises(ValueError, match="at most 250"):
        client.bulk_import([contact(i) for i in range(251)])
    assert recorder.requests == []


def test_a_body_of_400000_bytes_or_more_is_refused_before_sending():
    recorder = Recorder(QUEUED)
    big = [contact(i, fields=[{"id": 1, "value": "x" * 1700}]) for i in range(240)]
    assert len(json.dumps({"contacts": big})) >= MAX_BULK_BODY_BYTES
    with make_client(recorder) as client, pytest.raises(ValueError, match="400,000"):
        client.bulk_import(big)
    assert recorder.requests == []


def test_import_info_maps_status_false_to_none_and_ids_to_ints():
    recorder = Recorder(
        ok({"status": False, "success": [], "failure": []}),
        ok({"status": "completed", "success": ["12", "13"], "failure": ["bad@example.com"]}),
    )
    with make_client(recorder) as client:
        first = client.import_info("b-1")
        done = client.import_info("b-1")
    assert first.status is None
    assert (done.status, done.success, done.failure) == ("completed", [12, 13], ["bad@example.com"])
    assert recorder.requests[0].url.params["batchId"] == "b-1"


# -------------------------------------------------------------------------------- unit: retries


def test_429_waits_as_long_as_retry_after_says_and_logs_without_the_key(caplog):
    sleeps = Sleeps()
    recorder = Recorder(ok({"message": "slow down"}, 429, **{"Retry-After": "7"}), ok({"user": {"id": "1"}}))
    with (
        caplog.at_level(logging.WARNING, logger="shared.activecampaign"),
        make_client(recorder, sleep=sleeps) as c,
    ):
        c.check_connection()
    assert sleeps.waits == [7.0]
    assert len(recorder.requests) == 2
    retry_logs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert retry_logs
    assert "HTTP 429" in retry_logs[0]
    assert "7.0s" in retry_logs[0]
    assert all(KEY not in line for line in retry_logs)


def test_5xx_backs_off_exponentially_then_succeeds():
    sleeps = Sleeps()
    recorder = Recorder(ok({}, 500), ok({}, 502), ok({}, 500), ok({"user": {"id": "1"}}))
    with make_client(recorder, sleep=sleeps, backoff_initial=1.0) as client:
        client.check_connection()
    assert len(recorder.requests) == 4
    # initial * 2**n plus up to `initial` of jitter: 1..2, 2..3, 4..5
    for n, wait in enumerate(sleeps.waits):
        assert 2**n <= wait <= 2**n + 1


def test_attempts_run_out_into_unavailable_naming_what_failed():
    recorder = Recorder(ok({}, 503))
    with make_client(recorder, max_attempts=3) as client, pytest.raises(Unavailable) as info:
        client.get_list(1)
    assert len(recorder.requests) == 3
    assert "HTTP 503" in str(info.value)
    assert "GET /lists/1" in str(info.value)
    assert info.value.attempts == 3


def test_a_retry_after_beyond_the_time_cap_gives_up_at_once_instead_of_sleeping():
    sleeps = Sleeps()
    recorder = Recorder(ok({}, 429, **{"Retry-After": "600"}))
    with make_client(recorder, sleep=sleeps, max_retry_seconds=60) as client, pytest.raises(Unavailable):
        client.check_connection()
    assert sleeps.waits == []
    assert len(recorder.requests) == 1


def test_403_and_404_are_never_retried():
    recorder = Recorder(ok({"message": "Forbidden"}, 403))
    with make_client(recorder) as client, pytest.raises(InvalidApiKey):
        client.check_connection()
    assert len(recorder.requests) == 1


def test_bulk_rate_limit_400_waits_for_the_bulk_window_then_retries():
    sleeps = Sleeps()
    limited = ok(
        {
            "success": 0,
            "message": "Rate limit exceeded.",
            "failureReasons": ["Up to 100 imports may be requested per minute."],
        },
        400,
    )
    recorder = Recorder(limited, QUEUED)
    with make_client(recorder, sleep=sleeps) as client:
        queued = client.bulk_import([contact(1)])
    assert queued.batch_id == "b-1"
    assert sleeps.waits == [60.0]


def test_a_dropped_connection_is_retried():
    calls = []

    def drop_once(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return ok({"user": {"id": "1"}})

    with make_client(Recorder(drop_once)) as client:
        client.check_connection()
    assert len(calls) == 2


def test_client_for_uses_settings_suffixes_and_refuses_loopback_in_azure():
    local = load_settings({})
    with client_for("127.0.0.1:9", KEY, local) as client:
        assert client.hostname == "127.0.0.1:9"
    in_azure = load_settings({"WEBSITE_INSTANCE_ID": "abc"})
    with pytest.raises(HostError, match="loopback"):
        client_for("127.0.0.1:9", KEY, in_azure)


# -------------------------------------------------------------------------------- sandbox (real HTTP)


class RecordingTransport(httpx.HTTPTransport):
    """Real HTTP, keeping each request body so tests can check it against the published schema."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[tuple[str, bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append((request.url.path, request.read()))
        return super().handle_request(request)

    def bulk_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for path, body in self.bodies if path.endswith("/import/bulk_import")]


def sandbox_client(
    server: SandboxServer, *, pacer: Pacer | None = None, key: str = SANDBOX_API_KEY, **kwargs: Any
) -> ActiveCampaignClient:
    options: dict[str, Any] = {
        "pacer": pacer or free_pacer(sleep=time.sleep),
        "allowed_suffixes": DEFAULT_ALLOWED_HOST_SUFFIXES,
        "allow_loopback": True,
        "transport": RecordingTransport(),
        "backoff_initial": 0.05,
        "max_attempts": 4,
    }
    options.update(kwargs)
    return ActiveCampaignClient(server.hostname, key, **options)


def bulk_bodies(client: ActiveCampaignClient) -> list[dict[str, Any]]:
    transport = client._http._transport
    assert isinstance(transport, RecordingTransport)
    return transport.bulk_bodies()


def people(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "email": f"member{i}@example.com",
            "first_name": f"Member {i}",
            "fields": [{"id": LOYALTY_TIER_FIELD_ID, "value": "gold"}],
            "subscribe": [{"listid": str(NEWSLETTER_LIST_ID)}],
        }
        for i in range(start, start + n)
    ]


def api_requests(server: SandboxServer, path: str) -> list[Any]:
    return server.state.requests(f"/api/3{path}")


def test_sandbox_connection_check_and_list(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        assert client.check_connection()
        assert client.get_list(NEWSLETTER_LIST_ID)["name"] == "Newsletter"
    assert len(api_requests(ac_sandbox, "/users/me")) == 1


def test_sandbox_wrong_key_is_invalid_api_key_and_not_retried(ac_sandbox: SandboxServer) -> None:
    with (
        sandbox_client(ac_sandbox, key="not-the-sandbox-key") as client,
        pytest.raises(InvalidApiKey) as info,
    ):
        client.check_connection()
    assert "not-the-sandbox-key" not in str(info.value)
    assert ac_sandbox.state.counters()["forbidden"] == 1


def test_sandbox_key_rotation_with_set_api_key(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        ac_sandbox.set_api_key("rotated-sandbox-key")
        with pytest.raises(InvalidApiKey):
            client.check_connection()
        client.set_api_key("rotated-sandbox-key")
        assert client.check_connection()


def test_sandbox_missing_list_is_list_not_found(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client, pytest.raises(ListNotFound, match="list 99"):
        client.get_list(99)
    assert len(api_requests(ac_sandbox, "/lists/99")) == 1


def test_sandbox_every_field_page_is_read_with_int_ids(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        fields = client.list_fields()
    assert len(fields) == len(SANDBOX_FIELDS) > 100
    by_tag = {f.perstag: f.id for f in fields}
    assert by_tag["LOYALTY_TIER"] == LOYALTY_TIER_FIELD_ID
    assert by_tag["CITY"] == CITY_FIELD_ID  # only on the second page
    assert all(isinstance(f.id, int) for f in fields)
    assert [r.query for r in api_requests(ac_sandbox, "/fields")] == [
        "limit=100&offset=0",
        "limit=100&offset=100",
    ]


def test_sandbox_bulk_import_is_queued_and_its_info_completes(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        queued = client.bulk_import(people(3), exclude_automations=True)
        assert queued.queued == 3
        assert ac_sandbox.wait_until_idle(10)
        info = client.import_info(queued.batch_id)
        for body in bulk_bodies(client):
            BULK_VALIDATOR.validate(body)
    assert info.status == "completed"
    assert len(info.success) == 3
    assert info.failure == []
    members = ac_sandbox.state.list_members(NEWSLETTER_LIST_ID)
    assert set(members) == {f"member{i}@example.com" for i in range(3)}
    stored = ac_sandbox.state.contact("member0@example.com")
    assert stored is not None
    assert stored.fields[LOYALTY_TIER_FIELD_ID] == "gold"


def test_sandbox_import_info_before_the_batch_is_known_is_none(make_sandbox: MakeSandbox) -> None:
    limits = fast_limits()
    limits.info_false_window = 30.0
    server = make_sandbox(limits)
    with sandbox_client(server) as client:
        queued = client.bulk_import(people(2))
        assert client.import_info(queued.batch_id).status is None


def test_sandbox_partial_400_names_the_bad_contacts_and_queues_nothing(ac_sandbox: SandboxServer) -> None:
    batch = people(4)
    batch[1]["email"] = "not-an-email"
    batch[3]["fields"] = [{"id": 9999, "value": "x"}]
    with sandbox_client(ac_sandbox) as client, pytest.raises(BulkImportRejected) as info:
        client.bulk_import(batch)
    assert [index for index, _ in info.value.failures] == [1, 3]
    assert info.value.failures[1][1] == "not found (field 9999)"
    assert ac_sandbox.state.counters()["batches_queued"] == 0
    assert len(api_requests(ac_sandbox, "/import/bulk_import")) == 1


def test_sandbox_429_storm_is_waited_out_as_retry_after_says(make_sandbox: MakeSandbox, caplog) -> None:
    limits = fast_limits()
    limits.requests_per_second = 2
    server = make_sandbox(limits)
    # A pacer set far above the account's limit, as if another process used the budget.
    with caplog.at_level(logging.WARNING, logger="shared.activecampaign"), sandbox_client(server) as client:
        for _ in range(5):
            client.check_connection()
    counters = server.state.counters()
    assert counters["rate_limited"] >= 1
    ok_calls = [r for r in api_requests(server, "/users/me") if r.status == 200]
    assert len(ok_calls) == 5
    assert any("HTTP 429" in r.getMessage() for r in caplog.records)
    # Each retry came no sooner than Retry-After (the sandbox says at least 1 s) after its 429.
    calls = api_requests(server, "/users/me")
    for refused, following in itertools.pairwise(calls):
        if refused.status == 429:
            assert following.at - refused.at >= 1.0
    assert all(SANDBOX_API_KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("fault", "failures"),
    [
        (Fault.http_status(503, retry_after=1), 1),
        (Fault.http_status(500, count=2), 2),
        (Fault.http_status(502), 1),
        (Fault.drop_connection(), 1),
    ],
    ids=["503-retry-after", "500-twice", "502", "dropped-connection"],
)
def test_sandbox_transient_failures_are_retried(
    ac_sandbox: SandboxServer, fault: Fault, failures: int
) -> None:
    ac_sandbox.inject(fault)
    with sandbox_client(ac_sandbox) as client:
        assert client.get_list(NEWSLETTER_LIST_ID)["id"] == str(NEWSLETTER_LIST_ID)
    calls = api_requests(ac_sandbox, "/lists/1")
    assert [c.status == 200 for c in calls] == [False] * failures + [True]


def test_sandbox_503_retry_after_is_honoured(ac_sandbox: SandboxServer) -> None:
    ac_sandbox.inject(Fault.http_status(503, retry_after=1))
    with sandbox_client(ac_sandbox) as client:
        client.check_connection()
    first, second = api_requests(ac_sandbox, "/users/me")
    assert second.at - first.at >= 1.0


def test_sandbox_a_timed_out_request_is_retried(ac_sandbox: SandboxServer, caplog) -> None:
    ac_sandbox.inject(Fault.slow(2.0, path="/api/3/users/me"))
    with (
        caplog.at_level(logging.WARNING, logger="shared.activecampaign"),
        sandbox_client(ac_sandbox, timeout=0.3) as client,
    ):
        assert client.check_connection()
    assert any("timed out" in r.getMessage() for r in caplog.records)


def test_sandbox_retries_exhausted_is_unavailable(ac_sandbox: SandboxServer) -> None:
    ac_sandbox.inject(Fault.http_status(500, count=3))
    with sandbox_client(ac_sandbox, max_attempts=3) as client, pytest.raises(Unavailable, match="HTTP 500"):
        client.check_connection()
    assert len(api_requests(ac_sandbox, "/users/me")) == 3


def test_sandbox_html_login_page_is_unexpected_response(ac_sandbox: SandboxServer) -> None:
    ac_sandbox.inject(Fault.login_page())
    with sandbox_client(ac_sandbox) as client, pytest.raises(UnexpectedResponse, match="text/html"):
        client.check_connection()


def test_sandbox_redirect_is_not_followed(ac_sandbox: SandboxServer) -> None:
    ac_sandbox.inject(Fault.http_status(302))
    with sandbox_client(ac_sandbox) as client, pytest.raises(UnexpectedResponse, match="redirected"):
        client.check_connection()
    assert len(ac_sandbox.state.requests()) == 1


def test_sandbox_bulk_rate_limit_waits_for_the_bulk_window(ac_sandbox: SandboxServer) -> None:
    limited = {"success": 0, "message": "Rate limit exceeded.", "failureReasons": ["Up to 100 imports..."]}
    ac_sandbox.inject(Fault.http_status(400, path="/api/3/import/bulk_import", body=limited))
    # A short window keeps the test quick; the client waits whatever window its pacer measures.
    pacer = free_pacer(sleep=time.sleep, bulk_window_seconds=0.5)
    with sandbox_client(ac_sandbox, pacer=pacer) as client:
        assert client.bulk_import(people(2)).queued == 2
    posts = api_requests(ac_sandbox, "/import/bulk_import")
    assert [p.status for p in posts] == [400, 200]
    assert posts[1].at - posts[0].at >= 0.5


def test_sandbox_paced_clients_never_hit_the_account_limits(make_sandbox: MakeSandbox) -> None:
    # The real limits, and one pacer shared by three clients (three keys of one account) in threads.
    server = make_sandbox(Limits())
    pacer = Pacer(5, 100)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            with sandbox_client(server, pacer=pacer) as client:
                for i in range(2):
                    client.bulk_import(people(2, start=offset + 2 * i))
                    client.check_connection()
                    client.get_list(NEWSLETTER_LIST_ID)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(100 * n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counters = server.state.counters()
    assert counters["rate_limited"] == 0
    assert counters["bulk_rate_limited"] == 0
    assert counters["batches_queued"] == 6
    assert server.state.peak_in_window(1.0) <= 5
    posts = sorted(r.at for r in api_requests(server, "/import/bulk_import"))
    # Evenly spaced (60/98 s apart) rather than in a burst; a little slack for receive jitter.
    assert min(b - a for a, b in itertools.pairwise(posts)) >= 0.5


# -------------------------------------------------------------------------------- unit: key hygiene


@pytest.mark.parametrize(
    "key",
    [
        KEY[:4] + "\x0b" + KEY[4:],
        "k3y\x0cab12cd34ef56",
        "k3y ab12 cd34",
        "short",
        "k" * 257,
        "kéy-ab12cd34ef56",
    ],
)
def test_a_key_that_cannot_be_an_api_key_is_refused_without_showing_it(key):
    from shared.apikey import ApiKeyInvalid

    with pytest.raises(ApiKeyInvalid) as raised:
        ActiveCampaignClient(
            HOST,
            key,
            pacer=free_pacer(),
            allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES,
            allow_loopback=False,
        )
    message = str(raised.value)
    assert key.strip() not in message
    assert "printable ASCII" in message
    with make_client(Recorder()) as client, pytest.raises(ApiKeyInvalid):
        client.set_api_key(key)


@pytest.mark.parametrize(
    "error",
    [
        httpx.LocalProtocolError(f"Illegal header value {KEY.encode()!r}"),
        httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol for Api-Token: {KEY}"),
        httpx.DecodingError(f"could not decode {KEY!r} for person7%40example.com"),
    ],
)
def test_any_httpx_error_is_reported_by_type_and_scrubbed_text(error, caplog):
    def fail(_request: httpx.Request) -> httpx.Response:
        raise error

    with make_client(fail) as client, pytest.raises(ActiveCampaignError) as raised:  # type: ignore[arg-type]
        client.check_connection()
    message = str(raised.value)
    assert type(error).__name__ in message
    assert KEY not in message
    assert KEY.encode().hex() not in message
    assert "person7@example.com" not in message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
