"""Clients that come and go at random moments and cursors each receive exactly the log they asked for (I3)."""

import asyncio
import random

import pytest
from channels.db import database_sync_to_async

from threads.models import Message
from threads.services import message_post

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 8


async def restless_client(rng: random.Random, thread, user, connect) -> tuple[str, int]:
    """Connect, read a few frames, drop, reconnect (mostly from the cursor, sometimes rewound) until the end.

    Every session must deliver exactly after+1, after+2, … in order; return the
    reply text rebuilt from the client's own applied state, and the session count.
    """
    cursor, texts, sessions = 0, {}, 0
    while True:
        after = cursor if rng.random() < 0.7 else rng.randint(0, cursor)
        socket = await connect(thread.id, user, after=after)
        sessions += 1
        expected, ended = after + 1, False
        for _ in range(rng.randint(1, 12)):
            frame = await socket.receive()
            if frame["type"] in ("ready", "pong"):
                continue
            assert frame["seq"] == expected, f"session from {after}: got {frame['seq']}, wanted {expected}"
            expected += 1
            if frame["seq"] > cursor:  # apply only what this client has not applied yet
                cursor = frame["seq"]
                if frame["type"] == "delta":
                    texts[frame["message_id"]] = texts.get(frame["message_id"], "") + frame["text"]
            if frame["type"] == "end":
                ended = True
                break
        await socket.disconnect()
        if ended:
            return "".join(texts.values()), sessions
        await asyncio.sleep(rng.random() * 0.05)  # a random moment to come back, not a wait for a condition


@pytest.mark.parametrize("seed", [7, 2026])
async def test_random_resumes_are_exact(seed, thread, user, connect, worker, settings):
    """Seeded: many clients reconnecting at random cursors each rebuild exactly the stored reply."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 300
    settings.SCRIPTED_REPLY_TOKENS = 150
    settings.STREAM_FLUSH_MS = 10
    posted = await database_sync_to_async(message_post)(thread=thread, content=f"Seed {seed}", client_id=None)
    results = await asyncio.gather(
        *(restless_client(random.Random(seed * 100 + n), thread, user, connect) for n in range(CLIENTS))
    )
    reply = await Message.objects.aget(pk=posted.reply.id)
    assert reply.status == "complete"
    for text, _ in results:
        assert text == reply.content
    assert sum(sessions for _, sessions in results) > CLIENTS, "clients really did reconnect"
