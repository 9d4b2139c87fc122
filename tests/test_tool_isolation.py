"""I11 through tools: a tool's result is logged in the thread, so it brings in only what its readers may read."""

import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from streaming.tools import ToolContext
from threads.models import Message, ShareLink
from threads.services import message_post, thread_create
from threads.sharing import link_create, link_revoke, member_add, member_remove
from threads.tools import search_threads

pytestmark = pytest.mark.django_db(transaction=True)

# Written only in the owner's private thread.
SECRET = "zq-private-salary-figure-991"


def private_note(owner) -> str:
    """Make a thread of `owner`'s, never shared, holding the secret; return its id."""
    private = thread_create(owner=owner, title="private")
    message_post(thread=private, content=f"my note: {SECRET}", client_id=None, author=owner)
    return str(private.id)


def share(thread, *, how: str, owner, guest) -> None:
    """Share `thread` the way `how` names: with `guest` as a participant or viewer, or by a live link."""
    if how == "link":
        link_create(thread=thread, created_by=owner)
    else:
        member_add(thread=thread, username=guest.username, role=how, added_by=owner)


def ask_search(thread, author) -> ToolContext:
    """Post `author`'s question in `thread` and return the context search_threads runs in to answer it."""
    posted = message_post(thread=thread, content=f"find {SECRET}", client_id=None, author=author)
    return ToolContext(thread_id=thread.id, message_id=posted.reply.id, user_message_id=posted.message.id)


async def search(context: ToolContext) -> dict:
    return await search_threads.run({"query": SECRET}, context)


async def test_a_private_thread_searches_the_owners_other_threads(make_user):
    """In a thread only its owner reads, the search covers all the owner's threads."""
    alice = await database_sync_to_async(make_user)("alice")

    def setup() -> tuple[str, ToolContext]:
        return private_note(alice), ask_search(thread_create(owner=alice, title="asking"), alice)

    private_id, context = await database_sync_to_async(setup)()
    result = await search(context)
    assert [hit["thread_id"] for hit in result["results"]] == [private_id]
    assert result["scope"] == "owner_threads"


@pytest.mark.parametrize(
    ("how", "asker"),
    [("participant", "guest"), ("participant", "owner"), ("viewer", "owner"), ("link", "owner")],
)
async def test_a_shared_thread_searches_only_itself(make_user, how, asker):
    """Once shared, the search brings nothing of the owner's private threads, whoever asks."""
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")

    def setup() -> ToolContext:
        private_note(alice)
        shared = thread_create(owner=alice, title="shared")
        share(shared, how=how, owner=alice, guest=bob)
        return ask_search(shared, bob if asker == "guest" else alice)

    context = await database_sync_to_async(setup)()
    result = await search(context)
    assert result["results"] == []
    assert result["scope"] == "this_thread"


@pytest.mark.parametrize("unshare", ["link revoked", "link expired", "member removed"])
async def test_a_thread_no_longer_shared_searches_the_owners_threads_again(make_user, unshare):
    """With its link revoked or expired, or its member gone, the thread is the owner's alone again."""
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")

    def setup() -> tuple[str, ToolContext]:
        private_id = private_note(alice)
        thread = thread_create(owner=alice, title="once shared")
        if unshare == "member removed":
            member_add(thread=thread, username="bob", role="participant", added_by=alice)
            member_remove(thread=thread, user_id=bob.pk)
        else:
            link, _ = link_create(thread=thread, created_by=alice, expires_in_seconds=60)
            if unshare == "link revoked":
                link_revoke(thread=thread, link_id=link.pk)
            else:
                ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        return private_id, ask_search(thread, alice)

    private_id, context = await database_sync_to_async(setup)()
    result = await search(context)
    assert [hit["thread_id"] for hit in result["results"]] == [private_id]
    assert result["scope"] == "owner_threads"


async def test_a_participant_asking_in_a_shared_thread_reads_only_that_thread(make_user, connect, worker, settings):
    """The reviewer's scenario end to end: the logged result and the reply hold the shared thread's text only."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    settings.SCRIPTED_REPLY_TOKENS = 20
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")
    word = "zq-shared-plan-417"

    def setup():
        private = thread_create(owner=alice, title="private")
        message_post(thread=private, content=f"my note: {SECRET} and {word}", client_id=None, author=alice)
        shared = thread_create(owner=alice, title="shared")
        member_add(thread=shared, username="bob", role="participant", added_by=alice)
        return private, shared

    private, shared = await database_sync_to_async(setup)()
    await (await connect(private.id, alice)).receive_until(lambda frame: frame["type"] == "end")
    socket = await connect(shared.id, bob)
    for content in (f"the plan is {word}", f'look\n/tool search_threads {{"query": "{word}"}}'):
        await socket.send({"type": "send", "content": content, "client_id": str(uuid.uuid4())})
        end = await socket.receive_until(lambda frame: frame["type"] == "end")
    [output] = [
        frame["part"]["output"]
        for frame in socket.frames
        if frame["type"] == "part_end" and frame["part"]["type"] == "tool_result"
    ]
    # The earlier exchange (the scripted reply echoes the message), not the question nor the reply answering it.
    assert {hit["thread_id"] for hit in output["results"]} == {str(shared.id)}
    assert [hit["role"] for hit in output["results"]] == ["assistant", "user"]
    assert output["results"][1]["excerpt"] == f"the plan is {word}"
    assert output["scope"] == "this_thread"
    reply = await Message.objects.aget(pk=end["message_id"])
    assert SECRET not in reply.content and str(private.id) not in reply.content
