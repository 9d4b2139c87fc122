"""The JSON API as /api/openapi.json documents it: the document and the implementation checked against each other."""

import json
import uuid

import pytest
import schemathesis
from channels.db import database_sync_to_async
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks

from streaming.services.endings import generation_cancel
from threads.models import Message, Thread
from threads.openapi import openapi_document
from threads.services import message_post, thread_create
from threads.tokens.services import api_token_create

from .test_sse import HttpStream

# No example database: a run neither depends on earlier runs nor leaves files behind.
GENERATED = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
]


@pytest.fixture
def bearer(user) -> dict[str, str]:
    _, secret = api_token_create(user=user, name="schemathesis")
    return {"Authorization": f"Bearer {secret}"}


# Invalid input is refused with one of the documented client errors, never with a 2xx or a 5xx.
config = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 409, 413, 429]}}}
)
# The served document, read through the WSGI app; the endless event streams are left out.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application(), config=config).exclude(
    tag="streams"
)


@schema.hook("filter_body")
def only_seed_chat_bodies(context, body) -> bool:
    # An AI SDK body answers with the reply's stream, which ends only once a worker has written
    # it: tests/test_aisdk.py covers that answer, through the ASGI app with a worker running.
    return context.operation.path != "/api/chat" or not (isinstance(body, dict) and "messages" in body)


@schema.parametrize()
@settings(GENERATED, max_examples=30)
def test_api_conforms_to_openapi(case, bearer, transactional_db):
    """Generated valid and invalid requests get answers the document describes: status, type, headers, body."""
    case.call_and_validate(headers=bearer, checks=CHECKS)


def test_api_workflows_conform_to_openapi(bearer, transactional_db):
    """Sequences that follow the document's links (create, then read, rename, send, cancel, delete) conform too."""

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case) -> dict:
            return {"headers": bearer}

        def validate_response(self, response, case, **kwargs) -> None:
            assert response.status_code != 401, "the bearer token was not applied"
            case.validate_response(response, checks=CHECKS)

        def teardown(self) -> None:
            # Each scenario starts from no threads, so that replaying one while shrinking meets the same answers.
            Thread.objects.all().delete()

    Workflow.run(settings=settings(GENERATED, max_examples=15, stateful_step_count=6))


# --- What the document cannot say: paging, renaming and deleting behave as described ------------


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def test_thread_pages_cover_every_thread_once(signed_in, user):
    """Following `next` with `limit=2` lists every thread exactly once, newest activity first, and ends with null."""
    made = [thread_create(owner=user, title=f"t{n}") for n in range(5)]
    seen, cursor = [], None
    while True:
        body = signed_in.get("/api/threads", {"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [listed["id"] for listed in body["threads"]]
        if not (cursor := body["next"]):
            break
    assert seen == [str(thread.id) for thread in reversed(made)]


def test_malformed_cursor_is_400(signed_in):
    """A cursor the server did not hand out answers 400 bad_request."""
    response = signed_in.get("/api/threads", {"cursor": "bm90LWEtY3Vyc29y"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_message_pages_go_back_with_before(signed_in, thread):
    """`limit` gives the newest messages oldest first; `before=next` gives the ones before them; the seq is named."""
    for n in range(3):
        message_post(thread=thread, content=f"m{n}", client_id=None)
        generation_cancel(thread=thread)  # a queued reply ends at once, so the next send is not busy
    newest = signed_in.get(f"/api/threads/{thread.id}/messages", {"limit": 4}).json()
    assert [message["content"] for message in newest["messages"]][::2] == ["m1", "m2"] and newest["seq"] == 9
    older = signed_in.get(f"/api/threads/{thread.id}/messages", {"before": newest["next"], "limit": 4}).json()
    assert [message["content"] for message in older["messages"]] == ["m0", ""] and older["next"] is None


def test_rename_changes_the_title_not_the_order(signed_in, user, thread):
    """PATCH renames the thread without counting as activity: it keeps its place in the list."""
    newer = thread_create(owner=user, title="newer")
    response = signed_in.patch(
        f"/api/threads/{thread.id}", data={"title": "  Plans  "}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["title"] == "Plans"
    assert [listed["id"] for listed in signed_in.get("/api/threads").json()["threads"]] == [
        str(newer.id),
        str(thread.id),
    ]


def test_delete_removes_the_thread_and_its_messages(signed_in, thread):
    """DELETE answers 204; afterwards the thread answers 404 and its messages are gone."""
    message_post(thread=thread, content="bye", client_id=None)
    assert signed_in.delete(f"/api/threads/{thread.id}").status_code == 204
    assert signed_in.get(f"/api/threads/{thread.id}").status_code == 404
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "operation, url, status",
    [
        ("/api/threads/{thread_id}/events", "/api/threads/{thread_id}/events", 200),
        ("/api/threads/{thread_id}/events", "/api/threads/{unknown}/events", 404),
        ("/api/chat/stream", "/api/chat/stream?id={thread_id}", 204),
        ("/api/chat/resume/{stream_id}", "/api/chat/resume/{unknown}", 404),
        ("/api/chat/stream", "/api/chat/stream", 400),
        ("/api/chat/{chat_id}/stream", "/api/chat/{thread_id}/stream", 204),
        ("/api/chat/{chat_id}/stream", "/api/chat/{unknown}/stream", 404),
    ],
)
async def test_streams_answer_as_documented(operation, url, status, thread, user):
    """The event-stream operations, not in the generated runs, answer with a status, type and headers documented."""
    served = await asgi_get("/api/openapi.json")
    documented_responses = json.loads(await served.read_all())["paths"][operation]["get"]["responses"]
    _, secret = await database_sync_to_async(api_token_create)(user=user, name="doc")
    stream = await asgi_get(url.format(thread_id=thread.id, unknown=uuid.uuid4()), secret)
    assert stream.status == status
    documented = documented_responses[str(status)]
    if "content-type" in stream.headers:
        assert stream.headers["content-type"] in documented["content"]
    else:
        assert "content" not in documented
    for name, header in documented.get("headers", {}).items():
        assert stream.headers[name.lower()] == header["schema"].get("const", stream.headers[name.lower()])
    await stream.close()


async def asgi_get(url: str, secret: str | None = None) -> HttpStream:
    stream = HttpStream(url, headers={"authorization": f"Bearer {secret}"} if secret else {})
    stream.status, stream.headers = await stream.start()
    return stream


# --- Refusals the generated runs cannot reach: too many streams, too large a body ----------

STREAM_OPERATIONS = [
    ("/api/threads/{thread_id}/events", "/api/threads/{thread_id}/events"),
    ("/api/chat/stream", "/api/chat/stream?id={thread_id}"),
    ("/api/chat/{chat_id}/stream", "/api/chat/{thread_id}/stream"),
]


def documented_error(document: dict, documented: dict, body: dict) -> None:
    """Check an error answer's body against the Error schema the documented answer names."""
    assert documented["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(body) == {"error"} and set(body["error"]) == set(error["required"])
    assert body["error"]["code"] in error["properties"]["code"]["enum"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation, url", STREAM_OPERATIONS)
async def test_stream_past_the_limit_is_429_as_documented(operation, url, thread, user, settings):
    """A stream past CHAT_MAX_STREAMS_PER_USER answers the documented 429 rate_limited, with Retry-After."""
    settings.CHAT_MAX_STREAMS_PER_USER = 0
    # A reply being written, so that resuming it (the AI SDK's stream) would open a stream too.
    await database_sync_to_async(message_post)(thread=thread, content="Hi", client_id=None)
    served = await asgi_get("/api/openapi.json")
    document = json.loads(await served.read_all())
    await served.close()
    responses = document["paths"][operation]["get"]["responses"]
    assert "429" in responses, f"{operation} does not document the stream limit"
    documented = responses["429"]
    _, secret = await database_sync_to_async(api_token_create)(user=user, name="doc")
    refused = await asgi_get(url.format(thread_id=thread.id), secret)
    assert refused.status == 429
    assert documented["headers"]["Retry-After"]["required"] and int(refused.headers["retry-after"]) >= 1
    body = json.loads(await refused.read_all())
    await refused.close()
    assert body["error"]["code"] == "rate_limited"
    documented_error(document, documented, body)


def test_every_body_over_the_upload_limit_is_413_as_documented(client, thread, bearer, settings):
    """Each operation that takes a body answers one over DATA_UPLOAD_MAX_MEMORY_SIZE with its documented 413."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    document = openapi_document(server_url="http://testserver")
    with_bodies = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
    ]
    assert len(with_bodies) == 9, "an operation with a body was added or lost: it belongs in this test"
    oversized = json.dumps({"title": "x" * 2000, "content": "x" * 2000, "id": str(thread.id)})
    for method, path, operation in with_bodies:
        url = path.format(thread_id=thread.id, chat_id=thread.id, message_id=uuid.uuid4(), user_id=thread.owner_id)
        response = client.generic(method.upper(), url, data=oversized, content_type="application/json", headers=bearer)
        assert response.status_code == 413, (method, path, response.content)
        assert response.json()["error"]["code"] == "too_long"
        assert "413" in operation["responses"], f"{method} {path} does not document too_long"
        documented_error(document, operation["responses"]["413"], response.json())
    assert Message.objects.count() == 0 and Thread.objects.count() == 1
