"""Retention deletes old chunk rows, never message contents; a client resuming inside the pruned range gets a reset."""

from datetime import timedelta
from io import StringIO

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from streaming.management.commands.prunechunks import MAX_AGE_DAYS, MAX_BATCH_SIZE, parse_age, parse_batch_size
from streaming.models import Chunk
from streaming.retention import chunks_prune
from streaming.selectors import logged_reply_text
from threads.models import Message, Thread
from threads.services import message_post, reply_regenerate, thread_create
from threads.versions import version_switch

from .writes import generation_append, generation_claim, generation_finish


def reply_written(thread: Thread, *, deltas: tuple[str, ...] = ("Hel", "lo")) -> Message:
    """Post a message and write its reply from `deltas` with the worker's own services; return the reply."""
    posted = message_post(thread=thread, content="Hello", client_id=None)
    claim = generation_claim(worker="test-worker", model="scripted")
    for index, text in enumerate(deltas):
        generation_append(claim=claim, text=text, first=index == 0)
    generation_finish(claim=claim, status=Message.Status.COMPLETE)
    return Message.objects.get(pk=posted.reply.pk)


def age(messages, *, days: float) -> None:
    """Make `messages`, and the events logged so far against them, look as if they were written and ended `days` ago."""
    then = timezone.now() - timedelta(days=days)
    Chunk.objects.filter(message__in=messages).update(created_at=then)
    messages.update(created_at=then)
    messages.filter(completed_at__isnull=False).update(completed_at=then)


def chunk_seqs(thread: Thread) -> list[int]:
    """Return the seqs of the events the thread's log holds, a segment row's each."""
    rows = Chunk.objects.filter(thread=thread).order_by("seq").values_list("seq", "seq_last")
    return [seq for first, last in rows for seq in range(first, last + 1)]


def contents(thread: Thread) -> dict:
    return dict(Message.objects.filter(thread=thread).values_list("pk", "content"))


def prune(*args: str) -> str:
    out = StringIO()
    call_command("prunechunks", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_prune_deletes_old_chunks_and_keeps_every_content(thread):
    """Chunks of messages older than the cutoff go, but the thread's newest; every message keeps its content."""
    reply_written(thread)
    reply_written(thread, deltas=("Again",))
    age(Message.objects.filter(thread=thread), days=40)
    before = contents(thread)
    summary = chunks_prune(older_than=timedelta(days=30))
    thread.refresh_from_db()
    assert chunk_seqs(thread) == [thread.last_seq]
    assert contents(thread) == before
    assert (summary.chunks, summary.messages, summary.threads) == (thread.last_seq - 1, 4, 1)


@pytest.mark.django_db
def test_prune_keeps_chunks_of_messages_newer_than_the_cutoff(thread):
    """In one thread, the old exchange's chunks go and the recent exchange's chunks all stay."""
    old = reply_written(thread)
    age(Message.objects.filter(thread=thread), days=40)
    recent = reply_written(thread)
    chunks_prune(older_than=timedelta(days=30))
    assert chunk_seqs(thread) == list(range(recent.reply_to.seq, recent.content_seq + 1))
    assert not Chunk.objects.filter(message__in=[old, old.reply_to]).exists()


@pytest.mark.django_db
def test_prune_leaves_a_thread_whose_reply_is_streaming(thread):
    """A thread with a reply being written keeps its whole log, and the reply its text so far."""
    reply_written(thread)
    posted = message_post(thread=thread, content="More", client_id=None)
    claim = generation_claim(worker="test-worker", model="scripted")
    generation_append(claim=claim, text="Half a rep", first=True)
    age(Message.objects.filter(thread=thread), days=40)
    seqs_before = chunk_seqs(thread)
    summary = chunks_prune(older_than=timedelta(days=30))
    assert chunk_seqs(thread) == seqs_before
    assert logged_reply_text(message=Message.objects.get(pk=posted.reply.pk)) == "Half a rep"
    assert summary.chunks == 0


@pytest.mark.django_db
def test_dry_run_deletes_nothing_and_says_what_it_would_delete(thread):
    """`prunechunks --dry-run` counts the rows it would delete and deletes none."""
    reply_written(thread)
    age(Message.objects.filter(thread=thread), days=40)
    seqs_before = chunk_seqs(thread)
    output = prune("--older-than", "30d", "--dry-run")
    assert chunk_seqs(thread) == seqs_before
    assert output.startswith(f"Would delete {len(seqs_before) - 1} chunks of 2 messages in 1 threads")


@pytest.mark.django_db
def test_command_deletes_and_says_what_it_deleted(thread):
    """`prunechunks` deletes the old rows and reports how many."""
    reply_written(thread)
    age(Message.objects.filter(thread=thread), days=40)
    count = len(chunk_seqs(thread))
    output = prune("--older-than", "30d")
    assert len(chunk_seqs(thread)) == 1
    assert output.startswith(f"Deleted {count - 1} chunks of 2 messages in 1 threads")


@pytest.mark.django_db
def test_command_defaults_to_chunk_retention_days(settings, thread, make_user):
    """Without --older-than, messages older than CHUNK_RETENTION_DAYS lose their chunks and younger ones keep them."""
    settings.CHUNK_RETENTION_DAYS = 10
    reply_written(thread)
    age(Message.objects.filter(thread=thread), days=11)
    younger = thread_create(owner=make_user("bob"))
    reply_written(younger)
    age(Message.objects.filter(thread=younger), days=9)
    younger_seqs = chunk_seqs(younger)
    prune()
    assert len(chunk_seqs(thread)) == 1
    assert chunk_seqs(younger) == younger_seqs


@pytest.mark.django_db
@pytest.mark.parametrize("days", [-1, 0, 36501])
def test_command_refuses_a_retention_setting_out_of_range(settings, thread, days):
    """A negative CHUNK_RETENTION_DAYS would put the cutoff in the future: refused before anything goes."""
    settings.CHUNK_RETENTION_DAYS = days
    reply_written(thread)
    seqs = chunk_seqs(thread)
    with pytest.raises(CommandError, match=f"CHUNK_RETENTION_DAYS must be from 1 to 36500 days; it is {days}"):
        prune()
    assert chunk_seqs(thread) == seqs


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90))],
)
def test_age_accepts_days_hours_and_minutes(text, expected):
    """--older-than reads ages in days, hours and minutes."""
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["36500d", "876000h", "52560000m", "036500d"])
def test_age_accepts_up_to_a_century(text):
    """--older-than reads an age of up to MAX_AGE_DAYS days, in any unit."""
    assert parse_age(text) == timedelta(days=MAX_AGE_DAYS)


@pytest.mark.parametrize("text", ["36501d", "876001h", "1000000d", "99999999999999m", "1" * 5000 + "d"])
@pytest.mark.django_db
def test_command_refuses_an_age_past_a_century(text):
    """An age over MAX_AGE_DAYS days (one past the calendar among them) is refused, naming the option and the limit."""
    with pytest.raises(CommandError, match=f"--older-than: .* longer than the {MAX_AGE_DAYS}d"):
        prune(f"--older-than={text}")


@pytest.mark.parametrize("text", ["30", "d", "1.5d", "30s", "-3d"])
@pytest.mark.django_db
def test_command_refuses_an_unreadable_age(text):
    """An age without a whole number and a unit is refused before anything is deleted."""
    with pytest.raises(CommandError, match="not an age"):
        prune(f"--older-than={text}")


@pytest.mark.django_db(transaction=True)
async def test_cursor_inside_the_pruned_range_gets_a_reset_snapshot(thread, user, connect):
    """A client resuming from a cursor whose next events were pruned gets a reset with every content, then ready."""
    reply = await database_sync_to_async(reply_written)(thread)
    await database_sync_to_async(age)(Message.objects.filter(thread=thread), days=40)
    await database_sync_to_async(chunks_prune)(older_than=timedelta(days=30))
    last_seq = reply.content_seq
    socket = await connect(thread.id, user, after=2)
    reset = await socket.receive()
    assert reset["type"] == "reset"
    assert reset["seq"] == last_seq
    assert [message["content"] for message in reset["messages"]] == ["Hello", "Hello"]
    assert await socket.receive() == {"type": "ready", "seq": last_seq}


@pytest.mark.django_db(transaction=True)
async def test_cursor_before_the_kept_tail_resumes_without_reset(thread, user, connect):
    """A client that saw everything but the newest event still receives that event, which retention keeps."""
    reply = await database_sync_to_async(reply_written)(thread)
    await database_sync_to_async(age)(Message.objects.filter(thread=thread), days=40)
    await database_sync_to_async(chunks_prune)(older_than=timedelta(days=30))
    socket = await connect(thread.id, user, after=reply.content_seq - 1)
    end = await socket.receive()
    assert (end["type"], end["seq"], end["status"]) == ("end", reply.content_seq, "complete")
    assert await socket.receive() == {"type": "ready", "seq": reply.content_seq}


@pytest.mark.django_db(transaction=True)
async def test_a_recent_switch_to_an_old_version_stays_with_what_follows_it(thread, user, connect):
    """The switch is logged against the old version: it and every later event stay, and a resume gets them all."""

    def versions_then_prune() -> tuple[Message, int]:
        first = reply_written(thread)
        age(Message.objects.filter(thread=thread), days=40)
        again = reply_regenerate(thread=thread, reply=first)
        claim = generation_claim(worker="test-worker", model="scripted")
        generation_append(claim=claim, text="Another", first=True)
        generation_finish(claim=claim, status=Message.Status.COMPLETE)
        switch_seq = version_switch(thread=thread, message=first)  # back to the old reply, today
        reply_written(thread)
        chunks_prune(older_than=timedelta(days=30))
        return Message.objects.get(pk=again.pk), switch_seq

    again, switch_seq = await database_sync_to_async(versions_then_prune)()
    kept = await database_sync_to_async(chunk_seqs)(thread)
    assert kept == list(range(again.seq, kept[-1] + 1)), "only the start of the log went"
    assert switch_seq in kept
    socket = await connect(thread.id, user, after=again.seq - 1)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    assert [event["seq"] for event in socket.log_events] == kept


@pytest.mark.django_db
def test_command_reports_each_batch_on_stderr(thread):
    """With --batch-size, each batch deleted is one progress line on stderr; the summary stays on stdout."""
    for _ in range(3):
        reply_written(thread, deltas=("a", "b", "c"))
    age(Message.objects.filter(thread=thread), days=40)
    rows = Chunk.objects.filter(thread=thread).count() - 1  # the newest stays
    events = len(chunk_seqs(thread)) - 1
    out, err = StringIO(), StringIO()
    call_command("prunechunks", "--older-than", "30d", "--batch-size", "2", stdout=out, stderr=err)
    lines = err.getvalue().splitlines()
    assert len(lines) == (rows + 1) // 2
    assert lines[0].startswith("batch 1: deleted 2 rows; ") and f" of {events} events (" in lines[0]
    last_rows = 2 if rows % 2 == 0 else 1
    assert lines[-1] == f"batch {len(lines)}: deleted {last_rows} rows; {events} of {events} events (100%)"
    assert out.getvalue().startswith(f"Deleted {events} chunks of 6 messages in 1 threads")


@pytest.mark.django_db
def test_command_refuses_a_batch_size_below_one(thread):
    """A batch size of 0 is refused before anything is deleted."""
    with pytest.raises(CommandError):
        prune("--batch-size", "0")


@pytest.mark.parametrize("size", ["1", str(MAX_BATCH_SIZE)])
def test_batch_size_accepts_one_to_the_most_a_statement_takes(size):
    """--batch-size reads a whole number from 1 to MAX_BATCH_SIZE."""
    assert parse_batch_size(size) == int(size)


@pytest.mark.parametrize("size", [str(MAX_BATCH_SIZE + 1), str(2**64), "1" * 5000])
@pytest.mark.django_db
def test_command_refuses_a_batch_size_past_the_most_a_statement_takes(thread, size):
    """A batch size over MAX_BATCH_SIZE is refused, naming the option and its range, before anything is deleted."""
    reply_written(thread)
    age(Message.objects.filter(thread=thread), days=40)
    seqs = chunk_seqs(thread)
    with pytest.raises(CommandError, match=f"--batch-size: .* from 1 to {MAX_BATCH_SIZE}"):
        prune("--older-than", "30d", "--batch-size", size)
    assert chunk_seqs(thread) == seqs
