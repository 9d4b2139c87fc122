"""Bench data written straight into the models in bulk: a 10,000-event log takes a second, not minutes.

The rows are what the services would have written (I1: seqs 1..N without gaps, each
assistant message's content the concatenation of its deltas, a finished generation
per reply, each reply's deltas compacted as its end compacts them), only without
streaming them in real time.
"""

import uuid
from collections.abc import Callable
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from streaming.compaction import deltas_compacted
from streaming.models import Chunk, Generation
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply_tokens
from threads.models import Message, Thread

BENCH_USERNAME = "streambench"
BULK_BATCH_ROWS = 2000


def session_cookie(user: User) -> str:
    """Return a Cookie header value signed in as `user`, as a sign-in through the login page would set it."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def bench_user() -> tuple[User, str]:
    """Return the user who owns the benchmark's fixed threads, and a Cookie header signed in as them."""
    user, _ = get_user_model().objects.get_or_create(username=BENCH_USERNAME)
    return user, session_cookie(user)


def streams_create(*, count: int) -> list[dict[str, str]]:
    """Create `count` people, each with a session and one empty thread; return each thread's id and cookie.

    One person per stream, as in real use: per-person limits (sends per minute, open streams)
    and their queries then cost what they cost one person, instead of growing with the load.
    """
    prefix = uuid.uuid4().hex[:8]
    users = [get_user_model()(username=f"bench-{prefix}-{number}") for number in range(count)]
    for user in users:
        user.set_unusable_password()
    get_user_model().objects.bulk_create(users, batch_size=BULK_BATCH_ROWS)
    threads = [Thread(owner=user, title="bench stream") for user in users]
    Thread.objects.bulk_create(threads, batch_size=BULK_BATCH_ROWS)
    return [{"id": str(thread.id), "cookie": session_cookie(user)} for thread, user in zip(threads, users, strict=True)]


@transaction.atomic
def thread_with_log(
    *, owner: User, title: str, replies: int, reply_deltas: Callable[[list[Turn]], list[str]]
) -> tuple[str, int]:
    """Create a thread of `replies` finished exchanges; `reply_deltas(turns)` gives each reply's delta texts.

    Return the thread id and its last seq.
    """
    thread = Thread.objects.create(owner=owner, title=title)
    now = timezone.now()
    messages: list[Message] = []
    chunks: list[Chunk] = []
    generations: list[Generation] = []
    turns: list[Turn] = []
    seq = 0
    for number in range(replies):
        content = f"Question {number}: how does a resumable stream keep its order?"
        seq += 1
        asked = Message(
            thread=thread,
            role=Message.Role.USER,
            content=content,
            status=Message.Status.COMPLETE,
            seq=seq,
            content_seq=seq,
        )
        chunks.append(Chunk(thread=thread, seq=seq, message=asked, kind=Chunk.Kind.MESSAGE))
        turns.append(Turn("user", content))
        deltas = reply_deltas(turns)
        seq += 1
        reply = Message(
            thread=thread,
            role=Message.Role.ASSISTANT,
            content="".join(deltas),
            status=Message.Status.COMPLETE,
            seq=seq,
            reply_to=asked,
            model="bench",
            stop_reason="end_turn",
            completed_at=now,
        )
        chunks.append(Chunk(thread=thread, seq=seq, message=reply, kind=Chunk.Kind.START))
        delta_rows = [
            Chunk(thread=thread, seq=seq + number, message=reply, kind=Chunk.Kind.DELTA, text=text)
            for number, text in enumerate(deltas, start=1)
        ]
        # As the reply's end would have left them: compacted into segments, unless that is off.
        chunks += deltas_compacted(delta_rows) if settings.STREAM_COMPACT_REPLIES else delta_rows
        seq += len(deltas) + 1
        reply.content_seq = seq
        chunks.append(Chunk(thread=thread, seq=seq, message=reply, kind=Chunk.Kind.END))
        generations.append(
            Generation(message=reply, thread=thread, status=Generation.Status.DONE, attempts=1, finished_at=now)
        )
        messages += [asked, reply]
        turns.append(Turn("assistant", reply.content))
    Message.objects.bulk_create(messages, batch_size=BULK_BATCH_ROWS)
    Chunk.objects.bulk_create(chunks, batch_size=BULK_BATCH_ROWS)
    Generation.objects.bulk_create(generations, batch_size=BULK_BATCH_ROWS)
    Thread.objects.filter(pk=thread.pk).update(last_seq=seq)
    return str(thread.id), seq


def long_log_thread(*, owner: User, events: int, deltas_per_reply: int = 500) -> tuple[str, int]:
    """Create a thread whose log holds at least `events` events, in replies of `deltas_per_reply` deltas."""
    replies = max(1, -(-events // (deltas_per_reply + 3)))
    return thread_with_log(
        owner=owner,
        title=f"bench log of {events} events",
        replies=replies,
        reply_deltas=lambda turns: [f" token {number}" for number in range(deltas_per_reply)],
    )


def long_page_thread(*, owner: User, messages: int, reply_tokens: int = 120) -> tuple[str, int]:
    """Create a thread of `messages` messages with scripted (markdown) replies, one delta each."""
    return thread_with_log(
        owner=owner,
        title=f"bench page of {messages} messages",
        replies=max(1, messages // 2),
        reply_deltas=lambda turns: ["".join(scripted_reply_tokens(turns[-1:], reply_tokens))],
    )
