"""The Django side of the benchmark: seed the bench database, count what a run wrote, time resumes.

These run in a process started by `tool.py` with the servers' environment, so they see
the bench database and channel layer exactly as the servers do.
"""

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from django.db.models import Count, Q, Sum

from streaming.models import Chunk, Generation
from streaming.subscription import ThreadSubscription
from threads.access import athread_access
from threads.models import Message, Thread

from .fixtures import bench_user, long_log_thread, long_page_thread, streams_create
from .stats import Histogram

MILLISECOND = timedelta(milliseconds=1)


def seed(*, load_streams: int, idle_streams: int, log_events: int, short_log_events: int, page_messages: int) -> dict:
    """Create the people, sessions and threads the phases use; return their ids and cookies."""
    user, cookie = bench_user()
    long_log, long_log_seq = long_log_thread(owner=user, events=log_events)
    short_log, short_log_seq = long_log_thread(owner=user, events=short_log_events, deltas_per_reply=100)
    page, _ = long_page_thread(owner=user, messages=page_messages)
    return {
        "cookie": cookie,
        "load_streams": streams_create(count=load_streams),
        "idle_streams": streams_create(count=idle_streams),
        "long_log": {"id": long_log, "last_seq": long_log_seq},
        "short_log": {"id": short_log, "last_seq": short_log_seq},
        "page": {"id": page, "messages": Message.objects.filter(thread_id=page).count()},
    }


def streams(*, count: int) -> dict:
    """Create `count` more people with an empty thread each, for a load step."""
    return {"streams": streams_create(count=count)}


def count(*, threads: list[str]) -> dict:
    """Count the rows and tokens that the load phase wrote into `threads`.

    Rows are counted twice: as written while streaming (one per event: what each flush
    cost) and as kept once finished replies were compacted (what the log holds).
    """
    ids = [UUID(thread_id) for thread_id in threads]
    by_kind = list(
        Chunk.objects.filter(thread_id__in=ids).values("kind").annotate(kept=Count("id"), written=Sum("span"))
    )
    replies = Message.objects.filter(thread_id__in=ids, role=Message.Role.ASSISTANT)
    # A bench token is one word (stamps.py).
    tokens = sum(len(content.split()) for content in replies.values_list("content", flat=True).iterator())
    # A reply written by more than one worker: there should be none without failures.
    generations = Generation.objects.filter(thread_id__in=ids).aggregate(
        takeovers=Count("id", filter=Q(attempts__gt=1))
    )
    timestamps = (
        Generation.objects.filter(thread_id__in=ids, status=Generation.Status.DONE)
        .order_by("thread_id", "created_at")
        .values_list("thread_id", "created_at", "started_at", "first_token_at", "finished_at")
    )
    return {
        "chunk_rows": {row["kind"]: row["kept"] for row in by_kind},
        "chunk_rows_written": {row["kind"]: row["written"] for row in by_kind},
        "messages": Message.objects.filter(thread_id__in=ids).count(),
        "takeovers": generations["takeovers"],
        "tokens": tokens,
        "reply_cycle_ms": reply_cycle(timestamps),
    }


Timestamps = tuple[UUID, datetime, datetime | None, datetime | None, datetime | None]


def reply_cycle(generations: Iterable[Timestamps]) -> dict[str, Any]:
    """Summarise where each reply's cycle went besides its tokens, from its generation's timestamps.

    `generations` are done ones, by thread and in the order they were sent: each gives its
    thread, when the send wrote it, when a worker claimed it, when the round that committed
    its first text began, and when the round that ended it began (None where it never was: a
    reply cancelled before a worker took it). A stream's sender posts again once a reply's
    `end` reaches it, so these gaps, beside the reply's own tokens, are what keeps a stream
    from delivering every token it is offered.
    """
    queued, first_text, next_send = Histogram(), Histogram(), Histogram()
    previous: tuple[UUID, datetime | None] | None = None
    for thread_id, created_at, started_at, first_token_at, finished_at in generations:
        if started_at is not None:
            queued.add((started_at - created_at) / MILLISECOND)
            if first_token_at is not None:
                first_text.add((first_token_at - started_at) / MILLISECOND)
        if previous is not None and previous[0] == thread_id and previous[1] is not None:
            next_send.add((created_at - previous[1]) / MILLISECOND)
        previous = (thread_id, finished_at)
    return {
        "queued_to_claimed": queued.summary(),
        "claimed_to_first_text": first_text.summary(),
        "ended_to_next_send": next_send.summary(),
    }


def _thread_for_owner(thread_id: str) -> Thread:
    return Thread.objects.select_related("owner").get(pk=thread_id)


async def _resume_once(thread: Thread, after: int) -> tuple[float, int]:
    """Run what the consumer runs from connect to `ready`; return the time it took (ms) and the events sent."""
    started = time.perf_counter()
    access = await athread_access(user=thread.owner, thread_id=thread.id)
    frames = ThreadSubscription(thread=access.thread, after=after).frames()
    events = 0
    try:
        async for frame in frames:
            assert frame is not None, "the subscription has no keep-alives"
            if frame.type == "ready":
                break
            events += 1
        return (time.perf_counter() - started) * 1000, events
    finally:
        await frames.aclose()


async def _resume_cases(thread_id: str, cases: list[dict]) -> list[dict]:
    thread = await database_sync_to_async(_thread_for_owner)(thread_id)
    await _resume_once(thread, thread.last_seq)  # warm up: connections to the database and the channel layer
    results = []
    for case in cases:
        runs = [await _resume_once(thread, case["after"]) for _ in range(case["repeats"])]
        results.append({**case, "server_ms": [ms for ms, _ in runs], "events": runs[0][1]})
    return results


def resume_server(*, thread_id: str, cases: list[dict]) -> dict:
    """Time the server side of resumes from each case's `after`, `repeats` times each."""
    return {"cases": asyncio.run(_resume_cases(thread_id, cases))}


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "seed": seed,
    "streams": streams,
    "count": count,
    "resume_server": resume_server,
}
