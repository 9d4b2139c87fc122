"""`/api/chat`: the seed API and the AI SDK's UI message stream protocol v1, down to the real `ai` client."""

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from chatsite.bench.topology import free_port
from streaming.models import Chunk
from streaming.selectors import logged_reply_parts
from threads.aisdk import ui_client_id
from threads.models import Message
from threads.services import message_post, thread_create
from threads.tokens.services import api_token_create

from .agent_tools import tool_runs  # noqa: F401 (a fixture)
from .live_server import wait_until_answering
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 (an autouse fixture)
from .writes import reply_written

REPO = Path(__file__).resolve().parent.parent
NODE_TEST_DIR = Path(__file__).resolve().parent / "aisdk"


@pytest.fixture
async def chat_request(user):
    """Send one request to the ASGI app with `user`'s bearer token and return the started HttpStream, closed after."""
    streams: list[HttpStream] = []
    _, secret = await database_sync_to_async(api_token_create)(user=user, name="tests")

    async def request(url: str, *, method: str = "GET", body: dict | None = None) -> HttpStream:
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
        stream = HttpStream(url, method=method, headers=headers, body=json.dumps(body).encode() if body else b"")
        streams.append(stream)
        stream.status, stream.headers = await stream.start()
        return stream

    yield request
    for stream in streams:
        await stream.close()


async def ui_chunks(stream: HttpStream) -> list[dict]:
    """Read a UI message stream to its end and return its chunks; it must end with `data: [DONE]`."""
    records = [record for record in (await stream.read_all()).split("\n\n") if record.startswith("data: ")]
    assert records[-1] == "data: [DONE]", records[-1]
    return [json.loads(record.removeprefix("data: ")) for record in records[:-1]]


def seed_records(body: str) -> list[tuple[int | None, str]]:
    """Split an SSE body into (id, data) records the way the seed's reader does: `data:` lines, `id:` if any."""
    records = []
    for raw in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in raw.split("\n") if ": " in line and not line.startswith(":"))
        if "data" in fields:
            records.append((int(fields["id"]) if "id" in fields else None, fields["data"]))
    return records


def authorization(stream: HttpStream) -> dict[str, str]:
    """The headers another request needs to be the same person as `stream`'s."""
    scope_headers = dict(stream.communicator.scope["headers"])
    return {"authorization": scope_headers[b"authorization"].decode()}


def last_event_id(records: list[tuple[int | None, str]]) -> int | None:
    """The Last-Event-ID an EventSource holds once it has read `records`: the last `id:` among them."""
    return next((seq for seq, _ in reversed(records) if seq is not None), None)


async def resumed_after(
    url: str, first: HttpStream, held: list[tuple[int | None, str]]
) -> list[tuple[int | None, str]]:
    """Reconnect to `url` as `first`'s reader that holds `held`, the way an EventSource does, and read to the end."""
    stream = HttpStream(url, headers={**authorization(first), "last-event-id": str(last_event_id(held))})
    try:
        status, _ = await stream.start()
        assert status == 200, f"status {status} after {held[-1][1]}"
        return seed_records(await stream.read_all())
    finally:
        await stream.close()


def assert_goes_on_after(
    records: list[tuple[int | None, str]], cut: int, resumed: list[tuple[int | None, str]]
) -> None:
    """`resumed`, read after a drop that followed records[cut], is the rest of `records` byte for byte, skipping none.

    It may start a few records early, at the log event the record came from: those records carry no
    text and no `finish`, so nothing the reader rebuilds comes twice.
    """
    start = len(records) - len(resumed)
    assert resumed and records[start:] == resumed, "the resumed records are the stream's last ones, ids and all"
    assert start <= cut + 1, f"after {records[cut][1]}, the resume skips {records[cut + 1 : start]}"
    again = [json.loads(data)["type"] for _, data in records[start : cut + 1]]
    assert not {"text-delta", "reasoning-delta", "finish"} & set(again), f"after {records[cut][1]}, sent again: {again}"


def ui_message_body(text: str, chat_id: uuid.UUID | str, *, ui_id: str | None = None) -> dict:
    """An AI SDK DefaultChatTransport request body with one new user message (under `ui_id`, or a new UI id)."""
    ui_id = ui_id or "msg-" + uuid.uuid4().hex[:16]
    message = {"id": ui_id, "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": str(chat_id), "messages": [message], "trigger": "submit-message", "messageId": None}


def regenerate_body(chat_id: uuid.UUID | str, message_id: str | None) -> dict:
    """The AI SDK's request for `regenerate({messageId})`; the server reads only its id and messageId."""
    body = ui_message_body("One", chat_id, ui_id="msg-one")
    return body | {"trigger": "regenerate-message", "messageId": message_id}


async def on_path(thread) -> list[uuid.UUID]:
    """The ids of the thread's active path in order: the messages the AI SDK's Chat shows."""
    return [message.id async for message in Message.objects.filter(thread=thread, on_path=True).order_by("seq")]


def test_seed_post_to_foreign_id_answers_like_unknown(client, thread, make_user):
    """A seed POST naming another user's thread answers 404, as GET does for an unknown one, writes nothing (I11)."""
    client.force_login(make_user("mallory"))
    body = {"id": str(thread.id), "message": {"role": "user", "content": "hi"}}
    response = client.post("/api/chat", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 404 and response.json() == client.get(f"/api/threads/{uuid.uuid4()}").json()
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_aisdk_post_answers_the_reply_as_a_ui_message_stream(chat_request, thread, worker):
    """An AI SDK body answers start, text-start, text-deltas, text-end, finish and [DONE]: the stored reply's text."""
    stream = await chat_request("/api/chat", method="POST", body=ui_message_body("Hello there", thread.id))
    assert stream.status == 200 and stream.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert stream.headers["content-type"] == "text/event-stream"
    chunks = await ui_chunks(stream)
    reply = await Message.objects.aget(thread=thread, role="assistant")
    text_id = chunks[1]["id"]
    assert chunks[:2] == [{"type": "start", "messageId": str(reply.id)}, {"type": "text-start", "id": text_id}]
    assert chunks[-2:] == [{"type": "text-end", "id": text_id}, {"type": "finish", "finishReason": "stop"}]
    deltas = chunks[2:-2]
    assert deltas and all(chunk["type"] == "text-delta" and chunk["id"] == text_id for chunk in deltas)
    assert "".join(chunk["delta"] for chunk in deltas) == reply.content and reply.status == "complete"


@pytest.mark.django_db(transaction=True)
async def test_resume_replays_the_active_reply_from_its_start(chat_request, thread, worker, settings):
    """GET /api/chat/<id>/stream mid-reply re-sends start and text-start, then the whole text to the end."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 100
    first = await chat_request("/api/chat", method="POST", body=ui_message_body("Hello there", thread.id))
    await first.read_chunk()  # the reply has started
    resumed = await chat_request(f"/api/chat/{thread.id}/stream")
    assert resumed.status == 200 and resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    chunks = await ui_chunks(resumed)
    reply = await Message.objects.aget(thread=thread, role="assistant")
    assert [chunk["type"] for chunk in chunks[:2]] == ["start", "text-start"] and chunks[-1]["type"] == "finish"
    assert "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta") == reply.content


def test_resume_with_nothing_streaming_is_204(client, thread, user):
    """With no reply being written, the resume endpoint answers 204 and the AI SDK does not resume."""
    client.force_login(user)
    assert client.get(f"/api/chat/{thread.id}/stream").status_code == 204


async def reply_started_then_stopped(chat_request, thread):
    """Start a reply through POST /api/chat, wait for its first text, stop it; return its stream and the stop answer."""
    stream = await chat_request("/api/chat", method="POST", body=ui_message_body("Hello there", thread.id))
    while "text-delta" not in stream.buffer:
        assert await stream.read_chunk(), "the stream ended before any text"
    return stream, await chat_request(f"/api/chat/{thread.id}/stop", method="POST")


@pytest.mark.django_db(transaction=True)
async def test_stop_ends_the_stream_with_abort(chat_request, thread, worker, settings):
    """POST /api/chat/<id>/stop answers 202; the reply's stream ends with text-end and abort; a second stop is 409."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 50
    stream, stopped = await reply_started_then_stopped(chat_request, thread)
    assert stopped.status == 202 and json.loads(await stopped.read_all())["reply"]["role"] == "assistant"
    chunks = await ui_chunks(stream)
    assert chunks[-1] == {"type": "abort", "reason": "cancelled"} and chunks[-2]["type"] == "text-end"
    reply = await Message.objects.aget(thread=thread, role="assistant")
    assert reply.status == "cancelled"
    again = await chat_request(f"/api/chat/{thread.id}/stop", method="POST")
    assert again.status == 409


@pytest.mark.django_db(transaction=True)
async def test_regenerate_answers_a_stopped_reply_again(chat_request, thread, worker, settings):
    """`trigger: regenerate-message` after a stopped reply streams a new reply to the same user message."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 50
    first, _ = await reply_started_then_stopped(chat_request, thread)
    assert (await ui_chunks(first))[-1]["type"] == "abort"  # the stopped reply has ended
    stopped = await Message.objects.aget(thread=thread, role="assistant")
    body = ui_message_body("Hello there", thread.id) | {"trigger": "regenerate-message"}
    chunks = await ui_chunks(await chat_request("/api/chat", method="POST", body=body))
    retry = await Message.objects.exclude(pk=stopped.id).aget(thread=thread, role="assistant")
    assert retry.reply_to_id == stopped.reply_to_id and chunks[0] == {"type": "start", "messageId": str(retry.id)}
    assert "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta") == retry.content


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("named", ["question", "question's UI id", "reply", "none"])
async def test_regenerate_names_the_reply_by_its_question_or_takes_the_last(chat_request, thread, worker, named):
    """`regenerate({messageId})` of a question (server or UI id) or of a reply regenerates it; no messageId, the last.

    The earlier version is kept, and the active path is what the client shows: its list up to
    the message it named, then the new reply.
    """
    one = ui_message_body("One", thread.id, ui_id="msg-one")
    first_reply_id = (await ui_chunks(await chat_request("/api/chat", method="POST", body=one)))[0]["messageId"]
    await ui_chunks(await chat_request("/api/chat", method="POST", body=ui_message_body("Two", thread.id)))
    before = await on_path(thread)
    message_id = {
        "question": str(before[0]),
        "question's UI id": "msg-one",
        "reply": first_reply_id,  # a reply's id in the client is the one its stream's `start` gave it
        "none": None,
    }[named]
    chunks = await ui_chunks(
        await chat_request("/api/chat", method="POST", body=regenerate_body(thread.id, message_id))
    )
    again = await Message.objects.aget(pk=chunks[0]["messageId"])
    kept = before[:3] if named == "none" else before[:1]
    assert again.reply_to_id == kept[-1] and await on_path(thread) == [*kept, again.id]
    assert await Message.objects.filter(pk__in=before).acount() == 4, "the earlier versions are kept"


@pytest.mark.django_db(transaction=True)
async def test_regenerate_by_an_edited_questions_ui_id_answers_the_version_shown(chat_request, thread, worker):
    """After `sendMessage({text, messageId})`, `regenerate` of that UI id answers the edit, not the first text."""
    await ui_chunks(
        await chat_request("/api/chat", method="POST", body=ui_message_body("One", thread.id, ui_id="msg-one"))
    )
    edit = ui_message_body("One, edited", thread.id, ui_id="msg-one") | {"messageId": "msg-one"}
    await ui_chunks(await chat_request("/api/chat", method="POST", body=edit))
    await ui_chunks(await chat_request("/api/chat", method="POST", body=ui_message_body("Two", thread.id)))
    edited = await Message.objects.aget(thread=thread, content="One, edited")
    chunks = await ui_chunks(await chat_request("/api/chat", method="POST", body=regenerate_body(thread.id, "msg-one")))
    again = await Message.objects.aget(pk=chunks[0]["messageId"])
    assert again.reply_to_id == edited.id and await on_path(thread) == [edited.id, again.id]


@pytest.mark.parametrize(
    "named", ["UI id never sent", "server id never given", "other thread's message", "other thread's UI id"]
)
def test_regenerate_naming_no_message_of_the_thread_is_404(client, thread, user, named):
    """`regenerate({messageId})` with an id of nothing in this thread answers 404 not_found and regenerates nothing."""
    client.force_login(user)
    for _ in range(2):
        reply_written(thread)
    other = thread_create(owner=user, title="Other")
    # Sent there by an AI SDK client under its UI id, as `aisdk_send` stores it.
    message_post(thread=other, content="Hi", client_id=ui_client_id("msg-other"), author=user)
    message_id = {
        "UI id never sent": "msg-unknown",
        "server id never given": str(uuid.uuid4()),
        "other thread's message": str(Message.objects.get(thread=other, role="user").id),
        "other thread's UI id": "msg-other",
    }[named]
    before = Chunk.objects.filter(thread=thread).count()
    response = client.post(
        "/api/chat", json.dumps(regenerate_body(thread.id, message_id)), content_type="application/json"
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Chunk.objects.filter(thread=thread).count() == before


def test_aisdk_send_while_busy_is_409_and_writes_nothing(client, thread, user):
    """An AI SDK send while a reply is being written answers 409 busy as JSON, which the AI SDK raises."""
    client.force_login(user)
    message_post(thread=thread, content="first", client_id=None)
    response = client.post(
        "/api/chat", data=json.dumps(ui_message_body("second", thread.id)), content_type="application/json"
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "busy"
    assert Message.objects.filter(thread=thread).count() == 2


def approval_answer(body: dict, message_id: str, decisions: dict[str, bool]) -> dict:
    """The AI SDK's request after addToolApprovalResponse: the message `message_id` with its tool calls answered."""
    parts = [
        {
            "type": "dynamic-tool",
            "toolName": "guarded_counter",
            "toolCallId": tool_call_id,
            "state": "approval-responded",
            "input": {},
            "approval": {"id": f"approval-{tool_call_id}", "approved": approved},
        }
        for tool_call_id, approved in decisions.items()
    ]
    return {**body, "messages": [*body["messages"], {"id": message_id, "role": "assistant", "parts": parts}]}


async def approval_states(thread) -> dict[str, str]:
    """The state of each approval the thread's reply asked for, by tool call id, as its log says."""
    reply = await Message.objects.aget(thread=thread, role="assistant")
    parts = await database_sync_to_async(logged_reply_parts)(message=reply)
    return {part["tool_call_id"]: part["state"] for part in parts if part["type"] == "approval"}


@pytest.mark.parametrize("parts", [5, True, 1.5, "approval-responded", {"state": "approval-responded"}])
def test_approval_answer_whose_parts_are_not_a_list_is_400(client, thread, user, parts):
    """An answered reply whose `parts` is not a list answers 400 bad_request and writes nothing."""
    client.force_login(user)
    posted = message_post(thread=thread, content="Hi", client_id=None)
    body = ui_message_body("Hi", thread.id)
    body["messages"].append({"id": str(posted.reply.id), "role": "assistant", "parts": parts})
    before = Chunk.objects.count()
    response = client.post("/api/chat", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert Chunk.objects.count() == before


@pytest.mark.django_db(transaction=True)
async def test_an_approval_answer_naming_a_message_that_asked_nothing_decides_nothing(
    chat_request, thread, worker, tool_runs
):
    """Answering for the question instead of its reply is 400, and the call the reply waits on stays undecided."""
    body = ui_message_body("Guarded.\n/tool guarded_counter {}", thread.id)
    await ui_chunks(await chat_request("/api/chat", method="POST", body=body))
    question = await Message.objects.aget(thread=thread, role="user")
    answer = approval_answer(body, str(question.id), {"call_1_1": True})
    assert (await chat_request("/api/chat", method="POST", body=answer)).status == 400
    assert await approval_states(thread) == {"call_1_1": "requested"}


@pytest.mark.django_db(transaction=True)
async def test_an_approval_answer_refused_part_way_decides_none_of_its_calls(chat_request, thread, worker, tool_runs):
    """Answers for two calls, the second waited on by none: 409, and the first call stays undecided too."""
    body = ui_message_body("Guarded.\n/tool guarded_counter {}\n/tool guarded_counter {}", thread.id)
    chunks = await ui_chunks(await chat_request("/api/chat", method="POST", body=body))
    answer = approval_answer(body, chunks[0]["messageId"], {"call_1_1": True, "call_9_9": True})
    assert (await chat_request("/api/chat", method="POST", body=answer)).status == 409
    assert await approval_states(thread) == {"call_1_1": "requested", "call_1_2": "requested"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", ["/api/chat/resume/{reply}", "/api/chat/stream?id={thread}"])
async def test_a_reconnect_after_any_record_of_an_approval_request_gets_the_rest_once(
    chat_request, thread, worker, tool_runs, route
):
    """A reply waiting on an approval, dropped after any record before finish: Last-Event-ID gets the rest, once."""
    body = ui_message_body("Guarded.\n/think\n/tool guarded_counter {}", thread.id)
    await ui_chunks(await chat_request("/api/chat", method="POST", body=body))
    reply = await Message.objects.aget(thread=thread, role="assistant")
    thinking, call, approval = await database_sync_to_async(logged_reply_parts)(message=reply)
    assert (thinking["type"], call["type"], approval["state"]) == ("thinking", "tool_call", "requested")
    url = route.format(reply=reply.id, thread=thread.id)
    first = await chat_request(url)
    records = seed_records(await first.read_all())
    assert [data for _, data in records[-2:]] == ['{"type":"finish","finishReason":"tool-calls"}', "[DONE]"]
    for cut in range(len(records) - 2):  # after finish the reply waits for a person: a reconnect gets what follows
        held = records[: cut + 1]
        resumed = await resumed_after(url, first, held)
        assert_goes_on_after(records, cut, resumed)
        chunks = [json.loads(data) for _, data in held + resumed[:-1]]
        reasoning = "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "reasoning-delta")
        assert reasoning == thinking["text"], f"thinking rebuilt after {records[cut][1]}"
        assert {chunk["type"] for chunk in chunks} >= {"tool-input-available", "tool-approval-request"}
        assert chunks[-1] == {"type": "finish", "finishReason": "tool-calls"}


# --- The real AI SDK client against a live server -------------------------------------------------


@pytest.fixture
def live_server_environment() -> dict[str, str]:
    """Settings of the live server beyond the ones below, for a module to override."""
    return {}


@pytest.fixture
def live_server_with_token(tmp_path, live_server_environment):
    """Start daphne on its own SQLite file with the inline worker; yield its URL and a token made by manage.py."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "ANTHROPIC_API_KEY", "CHAT_PROVIDER")
    }
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "aisdk-test-secret-key",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "STREAM_INLINE_WORKER": "on",
        "SCRIPTED_TOKENS_PER_SECOND": "60",
        "SCRIPTED_REPLY_TOKENS": "80",
        "PYTHONUNBUFFERED": "1",
        **live_server_environment,
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "--verbosity", "0")
    manage("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('sdk')")
    token = manage("apitoken", "create", "--user", "sdk", "--name", "node test").strip()
    port = free_port()
    log = tmp_path / "daphne.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url, process, log, path="/api/openapi.json")
        yield url, token
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="runs in the embedded pass: its server has its own SQLite database whatever this pass uses",
)
@pytest.mark.parametrize(
    "script, tests",
    [
        ("chat.test.mjs", 2),  # the reply read and resumed mid-way
        ("versions.test.mjs", 4),  # regenerate, edit, and repeated sends, through the AI SDK's Chat
        ("seed.test.mjs", 1),  # the seed client's transport, reading /api/chat/stream, under the AI SDK's Chat
    ],
)
def test_ai_sdk_client_against_a_live_server(live_server_with_token, script, tests):
    """The `ai` package's own client against a live server: each Node test of `script` passes."""
    url, token = live_server_with_token
    assert shutil.which("node") and shutil.which("npm"), "Node.js and npm are needed for the AI SDK client test"
    if not (NODE_TEST_DIR / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_TEST_DIR, check=True, timeout=300)
    done = subprocess.run(
        ["node", "--test", "--test-reporter=spec", script],
        cwd=NODE_TEST_DIR,
        env={**os.environ, "CHATSITE_URL": url, "CHATSITE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"\bpass {tests}\b", done.stdout), f"all {tests} Node tests ran and passed:\n{done.stdout}"
