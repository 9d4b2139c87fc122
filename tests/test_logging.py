"""A generation's life is logged as structured lines with ids and timings, never with message text."""

import asyncio
import logging
import re

import pytest
from channels.db import database_sync_to_async

from threads.models import Message
from threads.services import message_post

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_WORDS = "my tax number is 12345"


async def runs_finished(worker) -> None:
    """Wait until the worker has no run left: a run logs its end after the `end` event is published."""
    deadline = asyncio.get_running_loop().time() + 10
    while worker.runs:
        assert asyncio.get_running_loop().time() < deadline, "the run did not finish"
        await asyncio.sleep(0.01)


def generation_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "streaming.generation"]


async def test_reply_logs_start_first_token_and_end(thread, user, connect, worker, caplog):
    """start, first_token and end lines carry the ids, timings and counts, and none of the text."""
    caplog.set_level(logging.INFO, logger="streaming.generation")
    socket = await connect(thread.id, user)
    posted = await database_sync_to_async(message_post)(thread=thread, content=SECRET_WORDS, client_id=None)
    await socket.receive_until(lambda frame: frame["type"] == "end")
    await runs_finished(worker)
    reply = await Message.objects.aget(pk=posted.reply.id)
    lines = generation_lines(caplog)
    assert [line.split()[0] for line in lines] == ["generation.start", "generation.first_token", "generation.end"]
    for line in lines:
        assert f"thread={thread.id}" in line and f"message={reply.id}" in line
    end = dict(re.findall(r"(\w+)=(\S+)", lines[-1]))
    assert end["status"] == "complete" and end["stop_reason"] == "end_turn"
    assert int(end["chars"]) == len(reply.content) and int(end["chunks"]) >= 1 and int(end["ms"]) >= 0
    assert SECRET_WORDS not in caplog.text and reply.content not in caplog.text


async def test_failed_reply_logs_its_error_code_as_a_warning(thread, user, connect, worker, settings, caplog):
    """A provider failure ends with a WARNING line naming the error code."""
    settings.CHAT_PROVIDER = "tests.fakes.FailingProvider"
    caplog.set_level(logging.INFO, logger="streaming.generation")
    socket = await connect(thread.id, user)
    await database_sync_to_async(message_post)(thread=thread, content="Hi", client_id=None)
    await socket.receive_until(lambda frame: frame["type"] == "end")
    await runs_finished(worker)
    (end,) = [record for record in caplog.records if record.getMessage().startswith("generation.end")]
    assert end.levelno == logging.WARNING
    assert "status=failed" in end.getMessage() and "error=provider_error" in end.getMessage()
