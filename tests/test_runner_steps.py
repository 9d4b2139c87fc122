"""An agent reply's steps keep their place after its text, and a reply's end takes its tools and thinking with it.

One runner and one committer on the embedded database, with the database's failures made
at will: the order a step and the text before it are logged in must not depend on how a
round's commit went.
"""

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from streaming import committer as committer_module
from streaming.committer import Committer
from streaming.models import Chunk, Generation
from streaming.providers import BaseProvider, ProviderError, ReplyEnd, TextDelta, ThinkingDelta, ToolCall
from streaming.runner import ReplyRun
from streaming.services.commits import generation_commit
from threads.models import Message
from threads.services import message_post

from .test_hub import eventually
from .writes import generation_claim

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_CALL = "Let me compute that. "


async def run_reply(thread, provider: BaseProvider, content: str = "6 * 7?") -> Message:
    """Post `content` and write its reply with `provider` through a committer of its own; return the reply."""
    posted = await database_sync_to_async(message_post)(thread=thread, content=content, client_id=None)
    claim = await database_sync_to_async(generation_claim)(worker="w", model="test")
    group = Committer()
    committing = asyncio.create_task(group.run())
    try:
        await asyncio.wait_for(ReplyRun(claim, provider, group).run(), 10)
    finally:
        committing.cancel()
        await asyncio.gather(committing, return_exceptions=True)
    return await Message.objects.aget(pk=posted.reply.id)


class TextThenCall(BaseProvider):
    """Writes a sentence, then calls the calculator once its text's round has failed; answers after the result."""

    def __init__(self, text_round_failed: asyncio.Event) -> None:
        self.text_round_failed = text_round_failed

    def model_name(self) -> str:
        return "test"

    async def stream(self, request):
        if any(part["type"] == "tool_result" for part in request.parts):
            yield TextDelta("It is 42.")
            yield ReplyEnd(stop_reason="end_turn")
            return
        yield TextDelta(BEFORE_THE_CALL)
        await self.text_round_failed.wait()
        yield ToolCall(id="c1", name="calculator", input={"expression": "6 * 7"})
        yield ReplyEnd(stop_reason="tool_use")


async def test_a_step_waits_for_the_text_a_retried_round_holds(thread, settings, monkeypatch):
    """The text's round loses its connection and waits to retry while the model calls a tool: the call comes after."""
    settings.STREAM_FLUSH_MS = 10
    settings.CHAT_TOOLS = ["threads.tools.calculator"]
    loop = asyncio.get_running_loop()
    text_round_failed = asyncio.Event()

    def commit_failing_the_first_text_round(*, writes, retrying=False):
        if not text_round_failed.is_set() and any(write.text for write in writes):
            loop.call_soon_threadsafe(text_round_failed.set)
            raise OperationalError("server closed the connection unexpectedly")  # nothing was committed
        return generation_commit(writes=writes, retrying=retrying)

    monkeypatch.setattr(
        committer_module, "ageneration_commit", database_sync_to_async(commit_failing_the_first_text_round)
    )
    reply = await run_reply(thread, TextThenCall(text_round_failed))

    assert text_round_failed.is_set()
    assert reply.status == Message.Status.COMPLETE
    assert [part["type"] for part in reply.parts] == ["text", "tool_call", "tool_result", "text"]
    assert reply.parts[0]["text"] == BEFORE_THE_CALL
    logged = [
        (kind, text)
        async for kind, text in Chunk.objects.filter(message_id=reply.id)
        .exclude(kind__in=[Chunk.Kind.START, Chunk.Kind.END])
        .order_by("seq")
        .values_list("kind", "text")
    ]
    assert logged[0] == (Chunk.Kind.DELTA, BEFORE_THE_CALL), logged


class HeldTool:
    """A tool that runs until the test lets it go, and tells how its run went."""

    description = "Waits until it is let go."
    input_schema = {"type": "object"}
    requires_approval = False
    idempotent = False
    on_uncertain = "fail"

    def __init__(self, name: str) -> None:
        self.name = name
        self.go = asyncio.Event()
        self.state = "not started"

    async def run(self, input, context):
        self.state = "running"
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.state = "cancelled"
            raise
        self.state = "done"
        return {"ok": True}


quick = HeldTool("quick")
slow = HeldTool("slow")


class CallsBoth(BaseProvider):
    def model_name(self) -> str:
        return "test"

    async def stream(self, request):
        yield ToolCall(id="c1", name="quick", input={})
        yield ToolCall(id="c2", name="slow", input={})
        yield ReplyEnd(stop_reason="tool_use")


async def test_a_lease_lost_by_one_tool_step_stops_the_replys_other_tools(thread, settings):
    """Another worker took the reply over: the quick tool's result finds the lease lost, and the slow tool stops."""
    settings.CHAT_TOOLS = [f"{__name__}.quick", f"{__name__}.slow"]
    for tool in (quick, slow):
        tool.go, tool.state = asyncio.Event(), "not started"
    await database_sync_to_async(message_post)(thread=thread, content="Run both", client_id=None)
    claim = await database_sync_to_async(generation_claim)(worker="w", model="test")
    group = Committer()
    committing = asyncio.create_task(group.run())
    try:
        running = asyncio.create_task(ReplyRun(claim, CallsBoth(), group).run())
        await eventually(lambda: quick.state == slow.state == "running", "both tools run")
        await Generation.objects.filter(pk=claim.generation_id).aupdate(lease_token=uuid.uuid4())
        quick.go.set()
        await asyncio.wait_for(running, 10)
        assert (quick.state, slow.state) == ("done", "cancelled")
    finally:
        slow.go.set()
        committing.cancel()
        await asyncio.gather(committing, return_exceptions=True)


class ThinksThenFails(BaseProvider):
    def model_name(self) -> str:
        return "test"

    async def stream(self, request):
        yield ThinkingDelta("Hmm, ")
        yield ThinkingDelta("let me think.")
        raise ProviderError("The provider is overloaded; try again shortly.")


async def test_thinking_broken_off_by_a_provider_error_is_kept_and_ended(thread, settings):
    """As the text of a failed reply is: the thinking written before the error, its part ended."""
    settings.STREAM_FLUSH_MS = 200  # the thinking is still buffered when the error comes
    reply = await run_reply(thread, ThinksThenFails())

    assert reply.status == Message.Status.FAILED
    assert reply.parts == [{"type": "thinking", "text": "Hmm, let me think.", "signature": None}]
    logged = Chunk.objects.filter(message_id=reply.id).order_by("seq").values_list("kind", flat=True)
    assert [kind async for kind in logged].count(Chunk.Kind.PART_END) == 1
