"""Versions of messages: a thread is a tree; one active path is shown, sent to the provider and followed by clients."""

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from streaming.errors import BadRequest, Busy
from streaming.models import Chunk, Generation
from streaming.providers import Turn
from streaming.services.claims import generation_claim_many
from threads.models import Message
from threads.services import message_post, reply_regenerate, reply_retry, thread_create
from threads.versions import message_edit, version_switch

from .conftest import RECEIVE_TIMEOUT_S
from .writes import generation_append, generation_claim, generation_finish, reply_written


def path_of(thread) -> list[uuid.UUID]:
    """The thread's active path as the server keeps it, in order."""
    return list(Message.objects.filter(thread_id=thread.pk, on_path=True).order_by("seq").values_list("id", flat=True))


def answered(thread, content: str = "Hello") -> Message:
    """Send `content` and write its reply to the end; return the reply."""
    posted = message_post(thread=thread, content=content, client_id=None)
    reply_finish()
    return Message.objects.get(pk=posted.reply.pk)


def reply_finish(text: str = "An answer") -> None:
    """Write the queued reply with `text` and end it complete."""
    claim = generation_claim(worker="test-worker", model="scripted")
    generation_append(claim=claim, text=text, first=True)
    generation_finish(claim=claim, status="complete", usage={"input_tokens": 1, "output_tokens": 1})


def path_from_events(events: list[dict]) -> list[str]:
    """Fold log events into the active path as a client does: a new message or a switch replaces what follows."""
    path: list[str] = []

    def cut_after(parent_id: str | None) -> None:
        del path[path.index(parent_id) + 1 if parent_id else 0 :]

    for event in events:
        if event["type"] in ("message", "start"):
            cut_after(event["message"]["parent_id"])
            path.append(event["message"]["id"])
        elif event["type"] == "switch":
            cut_after(event["parent_id"])
            path.extend(event["path"])
    return path


# --- Services ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_any_reply_can_be_regenerated_and_the_earlier_version_is_kept(thread):
    """A complete reply gets a new version under the same question; the first stays, off the path."""
    first = answered(thread)
    again = reply_regenerate(thread=thread, reply=first)
    first.refresh_from_db()
    assert (again.parent_id, again.reply_to_id) == (first.parent_id, first.reply_to_id)
    assert (first.on_path, again.on_path, first.status) == (False, True, "complete")
    assert path_of(thread) == [first.reply_to_id, again.id]
    assert Chunk.objects.filter(message=again).values_list("kind", "seq").get() == ("start", again.seq)
    assert Generation.objects.get(message=again).status == "queued"


@pytest.mark.django_db
def test_regenerating_an_earlier_reply_leaves_what_followed_it_off_the_path(thread):
    """Regenerating the first of two exchanges shows the new reply last; the second exchange stays, off the path."""
    first, second = answered(thread, "One"), answered(thread, "Two")
    again = reply_regenerate(thread=thread, reply=first)
    assert path_of(thread) == [first.reply_to_id, again.id]
    assert not Message.objects.filter(pk__in=[second.id, second.reply_to_id], on_path=True).exists()


@pytest.mark.django_db
def test_an_edit_is_a_sibling_of_the_question_with_a_reply_of_its_own(thread):
    """Editing the second question branches after the first reply; a send then follows the new reply."""
    first, second = answered(thread, "One"), answered(thread, "Two")
    edited = message_edit(thread=thread, message=second.reply_to, content="Two, better", client_id=None)
    assert edited.message.parent_id == first.id and edited.reply.parent_id == edited.message.id
    assert path_of(thread) == [first.reply_to_id, first.id, edited.message.id, edited.reply.id]
    reply_finish()
    after = message_post(thread=thread, content="Three", client_id=None)
    assert after.message.parent_id == edited.reply.id


@pytest.mark.django_db
def test_editing_the_first_question_starts_a_second_root(thread):
    """The first question's versions have no parent: an edit of it shows only the new exchange."""
    first = answered(thread, "One")
    answered(thread, "Two")
    edited = message_edit(thread=thread, message=first.reply_to, content="Uno", client_id=None)
    assert edited.message.parent_id is None
    assert path_of(thread) == [edited.message.id, edited.reply.id]


@pytest.mark.django_db
def test_a_repeated_edit_with_its_client_id_writes_nothing(thread):
    """The same edit again (same client_id) answers the first one (I7)."""
    question = answered(thread).reply_to
    client_id = uuid.uuid4()
    first = message_edit(thread=thread, message=question, content="Again", client_id=client_id)
    reply_finish()
    seq = thread.__class__.objects.get(pk=thread.pk).last_seq
    again = message_edit(thread=thread, message=question, content="Again", client_id=client_id)
    assert (again.message.id, again.reply.id) == (first.message.id, first.reply.id)
    assert thread.__class__.objects.get(pk=thread.pk).last_seq == seq


@pytest.mark.django_db
def test_switching_shows_a_version_and_the_newest_versions_below_it(thread):
    """Switching back to a question shows it with its newest reply; a `switch` event carries the new path."""
    answered(thread, "One")
    second = answered(thread, "Two")
    newer = reply_regenerate(thread=thread, reply=second)
    reply_finish()
    edited = message_edit(thread=thread, message=second.reply_to, content="Two, edited", client_id=None)
    reply_finish()

    seq = version_switch(thread=thread, message=second.reply_to)

    assert path_of(thread)[-2:] == [second.reply_to_id, newer.id]
    switch = Chunk.objects.get(thread=thread, seq=seq)
    assert (switch.kind, switch.message_id) == ("switch", second.reply_to_id)
    assert not Message.objects.get(pk=edited.message.id).on_path


@pytest.mark.django_db
def test_switching_to_the_version_shown_writes_nothing(thread):
    """A switch to what is shown answers the thread's last seq and logs nothing."""
    reply = answered(thread)
    last_seq = thread.__class__.objects.get(pk=thread.pk).last_seq
    assert version_switch(thread=thread, message=reply) == last_seq
    assert thread.__class__.objects.get(pk=thread.pk).last_seq == last_seq


@pytest.mark.django_db
def test_editing_regenerating_and_switching_while_a_reply_is_written_are_busy(thread):
    """Each is refused with Busy while a reply streams (I6), and writes nothing."""
    first = answered(thread, "One")
    again = reply_regenerate(thread=thread, reply=first)  # still queued: a reply being written
    before = (path_of(thread), Message.objects.count(), Chunk.objects.count())
    with pytest.raises(Busy):
        reply_regenerate(thread=thread, reply=again)
    with pytest.raises(Busy):
        message_edit(thread=thread, message=first.reply_to, content="Other", client_id=None)
    with pytest.raises(Busy):
        version_switch(thread=thread, message=first)
    assert (path_of(thread), Message.objects.count(), Chunk.objects.count()) == before


@pytest.mark.django_db
def test_a_version_off_the_active_path_cannot_branch(thread):
    """Only a version of a message on the path can be added or shown: others answer bad_request."""
    first, second = answered(thread, "One"), answered(thread, "Two")
    reply_regenerate(thread=thread, reply=first)  # the second exchange leaves the path
    reply_finish()
    with pytest.raises(BadRequest):
        message_edit(thread=thread, message=second.reply_to, content="Orphan", client_id=None)
    with pytest.raises(BadRequest):
        version_switch(thread=thread, message=second)
    with pytest.raises(BadRequest):
        reply_regenerate(thread=thread, reply=second)


@pytest.mark.django_db
def test_only_messages_of_the_right_kind_and_thread_are_versioned(thread, user):
    """A reply cannot be edited, a question not regenerated, and another thread's message not touched."""
    reply = answered(thread)
    other = thread_create(owner=user)
    with pytest.raises(BadRequest):
        message_edit(thread=thread, message=reply, content="x", client_id=None)
    with pytest.raises(BadRequest):
        reply_regenerate(thread=thread, reply=reply.reply_to)
    with pytest.raises(BadRequest):
        version_switch(thread=other, message=reply)


@pytest.mark.django_db
def test_retry_is_still_for_failed_or_cancelled_replies_only(thread):
    """The pages' Retry keeps its meaning; it is a regenerate underneath."""
    failed = reply_written(thread, status="failed", error={"code": "provider_error", "detail": "x"})
    retried = reply_retry(thread=thread, reply=failed)
    assert retried.parent_id == failed.parent_id and path_of(thread)[-1] == retried.id
    reply_finish()
    with pytest.raises(BadRequest):
        reply_retry(thread=thread, reply=Message.objects.get(pk=retried.id))


@pytest.mark.django_db
def test_the_provider_is_sent_the_active_path(thread):
    """A reply's conversation is the path: neither the edited question nor the replies after it."""
    answered(thread, "One")
    second = answered(thread, "Two")
    edited = message_edit(thread=thread, message=second.reply_to, content="Two, edited", client_id=None)
    (claim,) = generation_claim_many(worker="test-worker", model="scripted", limit=1)
    assert claim.message_id == edited.reply.id
    assert claim.request.turns == [Turn("user", "One"), Turn("assistant", "An answer"), Turn("user", "Two, edited")]


@pytest.mark.django_db
def test_a_regenerated_earlier_reply_is_not_sent_what_followed_it(thread):
    """Regenerating the first reply of two exchanges sends the provider the first question only."""
    first = answered(thread, "One")
    answered(thread, "Two")
    again = reply_regenerate(thread=thread, reply=first)
    (claim,) = generation_claim_many(worker="test-worker", model="scripted", limit=1)
    assert claim.message_id == again.id and claim.request.turns == [Turn("user", "One")]


# --- HTTP ----------------------------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def post(client, url: str, body: dict | None = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


@pytest.mark.django_db
def test_http_edit_regenerate_and_switch(signed_in, thread):
    """The three routes answer as documented and move the path."""
    reply = answered(thread)
    base = f"/api/threads/{thread.id}"
    edited = post(signed_in, f"{base}/messages/{reply.reply_to_id}/edit", {"content": "Hi again"})
    assert edited.status_code == 202, edited.content
    body = edited.json()
    assert body["message"]["parent_id"] is None and body["reply"]["parent_id"] == body["message"]["id"]
    assert post(signed_in, f"{base}/replies/{body['reply']['id']}/regenerate").status_code == 409
    reply_finish()
    regenerated = post(signed_in, f"{base}/replies/{body['reply']['id']}/regenerate")
    assert regenerated.status_code == 202 and regenerated.json()["reply"]["parent_id"] == body["message"]["id"]
    reply_finish()
    switched = post(signed_in, f"{base}/messages/{reply.reply_to_id}/switch")
    assert switched.status_code == 200 and switched.json()["seq"] == thread.__class__.objects.get(pk=thread.pk).last_seq
    assert path_of(thread) == [reply.reply_to_id, reply.id]
    snapshot = signed_in.get(base).json()
    assert [message["id"] for message in snapshot["messages"] if message["on_path"]] == [
        str(reply.reply_to_id),
        str(reply.id),
    ]


@pytest.mark.django_db
def test_snapshots_name_each_messages_versions_even_those_left_out_of_the_page(signed_in, thread):
    """A page of the newest messages gives each its versions, with ids of versions older than the page."""
    first = answered(thread, "One")
    edited = message_edit(thread=thread, message=first.reply_to, content="Uno", client_id=None)
    reply_finish()
    snapshot = signed_in.get(f"/api/threads/{thread.id}?limit=2").json()
    question, reply = snapshot["messages"]
    assert question["id"] == str(edited.message.id) and snapshot["next"] is not None
    assert question["versions"] == {"index": 1, "ids": [str(first.reply_to_id), str(edited.message.id)]}
    assert reply["versions"] == {"index": 0, "ids": [str(edited.reply.id)]}
    assert question["on_path"] and reply["on_path"]


@pytest.mark.django_db
def test_http_refusals(signed_in, thread):
    """A question is not regenerated (400), an unknown message is 404, an empty edit 400."""
    reply = answered(thread)
    base = f"/api/threads/{thread.id}"
    assert post(signed_in, f"{base}/replies/{reply.reply_to_id}/regenerate").json()["error"]["code"] == "bad_request"
    assert post(signed_in, f"{base}/messages/{uuid.uuid4()}/switch").status_code == 404
    assert post(signed_in, f"{base}/messages/{reply.reply_to_id}/edit", {"content": " "}).status_code == 400


# --- WebSocket -----------------------------------------------------------------------------------------


async def until_ended(socket, reply_id: str) -> None:
    await socket.receive_until(lambda frame: frame["type"] == "end" and frame["message_id"] == reply_id)


@pytest.mark.django_db(transaction=True)
async def test_websocket_frames_and_replay_from_every_cursor(connect, user, thread, worker, settings):
    """Edit, regenerate and switch frames reach every tab; a replay from any cursor ends on the same path."""
    settings.SCRIPTED_REPLY_TOKENS = 6
    writer = await connect(thread.id, user)
    watcher = await connect(thread.id, user)
    await writer.receive_until(lambda frame: frame["type"] == "ready")
    await writer.send({"type": "send", "content": "One"})
    start = await writer.receive_until(lambda frame: frame["type"] == "start")
    question_id = start["message"]["parent_id"]

    await writer.send({"type": "regenerate", "message_id": start["message"]["id"]})
    busy = await writer.receive_until(lambda frame: frame["type"] == "error")
    assert busy["code"] == "busy"
    await until_ended(writer, start["message"]["id"])

    await writer.send({"type": "regenerate", "message_id": start["message"]["id"]})
    regenerated = await writer.receive_until(lambda frame: frame["type"] == "start")
    await until_ended(writer, regenerated["message"]["id"])
    await writer.send({"type": "edit", "message_id": question_id, "content": "Uno", "client_id": str(uuid.uuid4())})
    edited = await writer.receive_until(lambda frame: frame["type"] == "start")
    await until_ended(writer, edited["message"]["id"])
    await writer.send({"type": "switch", "message_id": question_id})
    switch = await writer.receive_until(lambda frame: frame["type"] == "switch")
    assert switch["path"] == [question_id, regenerated["message"]["id"]]
    await watcher.receive_until(lambda frame: frame["type"] == "switch")

    server_path = [str(message_id) for message_id in await database_sync_to_async(path_of)(thread)]
    assert path_from_events(writer.log_events) == path_from_events(watcher.log_events) == server_path
    live = writer.log_events
    assert [event["seq"] for event in live] == list(range(1, switch["seq"] + 1))
    for cursor in range(switch["seq"] + 1):
        tab = await connect(thread.id, user, after=cursor)
        await tab.receive_until(lambda frame: frame["type"] == "ready", timeout=RECEIVE_TIMEOUT_S)
        assert tab.log_events == live[cursor:], f"replay after {cursor} differs from live"
        await tab.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_bad_version_frame_is_an_error_frame(connect, user, thread):
    """A frame without a message id, or naming one not of this thread, gets an error frame; the socket stays open."""
    socket = await connect(thread.id, user)
    await socket.send({"type": "switch"})
    assert (await socket.receive_until(lambda frame: frame["type"] == "error"))["code"] == "bad_request"
    await socket.send({"type": "edit", "message_id": str(uuid.uuid4()), "content": "x"})
    assert (await socket.receive_until(lambda frame: frame["type"] == "error"))["code"] == "not_found"
    foreign = await database_sync_to_async(message_post)(
        thread=await database_sync_to_async(thread_create)(owner=user), content="Elsewhere", client_id=None
    )
    await socket.send({"type": "regenerate", "message_id": str(foreign.reply.id)})
    assert (await socket.receive_until(lambda frame: frame["type"] == "error"))["code"] == "not_found"
    await socket.send({"type": "ping"})
    assert (await socket.receive_until(lambda frame: frame["type"] == "pong"))["type"] == "pong"


# --- The migration that placed earlier messages in the tree ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_fill_migration_places_earlier_messages_and_their_retries(user):
    """A thread written before versions: each message follows the one before it, a retry is its reply's sibling."""
    executor = MigrationExecutor(connection)
    before, after = [("threads", "0008_message_versions")], [("threads", "0009_message_versions_fill")]
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        Thread, OldMessage = apps.get_model("threads", "Thread"), apps.get_model("threads", "Message")
        thread = Thread.objects.create(owner_id=user.pk, title="Old")

        def old(seq: int, role: str, reply_to=None):
            return OldMessage.objects.create(
                thread=thread, role=role, seq=seq, content_seq=seq, status="complete", reply_to=reply_to
            )

        question = old(1, "user")
        failed, retried = old(2, "assistant", question), old(3, "assistant", question)
        follow_up = old(4, "user")
        last = old(5, "assistant", follow_up)

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        rows = dict(Message.objects.filter(thread_id=thread.pk).values_list("id", "parent_id"))
        assert rows == {
            question.id: None,
            failed.id: question.id,
            retried.id: question.id,
            follow_up.id: retried.id,
            last.id: follow_up.id,
        }
        assert path_of(thread) == [question.id, retried.id, follow_up.id, last.id]
    finally:
        MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
