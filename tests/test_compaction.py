"""A finished reply's delta rows are compacted into segment rows, and every read gives back the very same events."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from streaming.compaction import SEGMENT_MAX_EVENTS, SEGMENT_MAX_TEXT_BYTES, deltas_compacted
from streaming.models import Chunk, Generation
from streaming.retention import chunks_prune
from streaming.selectors import chunk_events_after
from threads.models import Message, Thread
from threads.services import message_post

from . import writes
from .writes import generation_append, generation_claim, generation_finish, reply_compact

# Texts a byte-for-byte comparison must survive: multi-byte characters, an emoji, JSON escapes, a line separator.
DELTAS = ("Hel", "lo, ", "wörld", " 😀", ' "quoted" ', "back\\slash", "\n", "tab\t", "\u2028", "é" * 5, ".")


def reply_written(thread: Thread, **written) -> Message:
    """A reply written from DELTAS unless told otherwise."""
    return writes.reply_written(thread, **{"deltas": DELTAS, **written})


def delta_rows(message: Message) -> list[Chunk]:
    return list(Chunk.objects.filter(message=message, kind=Chunk.Kind.DELTA).order_by("seq"))


def the_log(thread: Thread) -> list[tuple[int, str, str]]:
    """Return every event of the thread's log as it is served: (seq, kind, frame text)."""
    return chunk_events_after(thread_id=thread.id, after=0, limit=10_000)


def written_uncompacted(settings, thread: Thread, **reply) -> tuple[Message, list[tuple[int, str, str]]]:
    """Write a reply with compaction off and return it with the log's events, one row each as they were sent live."""
    settings.STREAM_COMPACT_REPLIES = False
    reply = reply_written(thread, **reply)
    live = the_log(thread)
    assert len(delta_rows(reply)) == len(DELTAS), "one row per delta before compaction"
    settings.STREAM_COMPACT_REPLIES = True
    return reply, live


def assert_every_read_is_the_live_log(thread: Thread, live: list[tuple[int, str, str]]) -> None:
    """From every cursor, with every `until` and several limits, a read gives exactly the live events, byte for byte."""
    last = live[-1][0]
    assert [seq for seq, _, _ in live] == list(range(1, last + 1))
    for after in range(last + 1):
        assert chunk_events_after(thread_id=thread.id, after=after) == live[after:], f"after={after}"
        for limit in (1, 2, 5):
            read = chunk_events_after(thread_id=thread.id, after=after, limit=limit)
            assert read == live[after : after + limit], f"after={after}, limit={limit}"
        for until in range(after, last + 1):
            read = chunk_events_after(thread_id=thread.id, after=after, until=until)
            assert read == live[after:until], f"after={after}, until={until}"


@pytest.mark.django_db
def test_ended_reply_keeps_its_deltas_in_one_segment_row(thread):
    """When a reply ends, its deltas are one segment row holding each delta's seq, text and boundaries."""
    reply = reply_written(thread)
    (segment,) = delta_rows(reply)
    assert (segment.seq, segment.seq_last, segment.span) == (reply.seq + 1, reply.seq + len(DELTAS), len(DELTAS))
    assert segment.text == "".join(DELTAS) == reply.content
    assert segment.event_lengths == [len(text) for text in DELTAS]
    assert len(segment.event_offsets_ms) == len(DELTAS) and segment.event_offsets_ms[0] == 0
    assert Chunk.objects.filter(thread=thread).count() == 4  # message, start, the segment, end


@pytest.mark.django_db
def test_replay_from_every_cursor_is_the_live_log_byte_for_byte(thread, settings):
    """Every read, with its cursor, `until` or limit inside a segment or at its edges, gives the live frames exactly."""
    reply, live = written_uncompacted(settings, thread)
    assert reply_compact(message=reply) == len(DELTAS) - 1
    assert len(delta_rows(reply)) == 1
    assert the_log(thread) == live
    assert_every_read_is_the_live_log(thread, live)


@pytest.mark.django_db(transaction=True)
async def test_resuming_inside_a_segment_sends_the_frames_sent_live(thread, user, connect, worker):
    """Frames a WebSocket received live are the frames sent, text for text, to one that resumes inside the segment."""
    watcher = await connect(thread.id, user)
    assert await watcher.receive() == {"type": "ready", "seq": 0}
    posted = await database_sync_to_async(message_post)(thread=thread, content="Hello there", client_id=None)
    live: list[str] = []
    while '"type":"end"' not in (frame := await watcher.communicator.receive_from(timeout=10)):
        live.append(frame)
    live.append(frame)
    (segment,) = await database_sync_to_async(delta_rows)(posted.reply)
    assert segment.span > 2, "the reply streamed in several deltas, now one row"
    for after in (segment.seq - 1, segment.seq, segment.seq + 1, segment.seq_last - 1, segment.seq_last):
        resumed = await connect(thread.id, user, after=after)
        replayed = [await resumed.communicator.receive_from(timeout=10) for _ in live[after:]]
        assert replayed == live[after:], f"after={after}"
        assert await resumed.receive() == {"type": "ready", "seq": len(live)}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "error"),
    [("cancelled", None), ("failed", {"code": "provider_error", "detail": "The provider went away."})],
)
def test_cancelled_and_failed_replies_compact_and_replay_exactly(thread, settings, status, error):
    """A reply that ended cancelled or failed is compacted too, with its text kept and every read unchanged."""
    settings.STREAM_COMPACT_REPLIES = False
    reply = reply_written(thread, status=status, error=error)
    live = the_log(thread)
    settings.STREAM_COMPACT_REPLIES = True
    reply_compact(message=reply)
    assert [row.span for row in delta_rows(reply)] == [len(DELTAS)]
    assert Message.objects.get(pk=reply.pk).content == "".join(DELTAS)
    assert_every_read_is_the_live_log(thread, live)


@pytest.mark.django_db
def test_reply_ending_cancelled_or_failed_is_compacted_by_its_end(thread):
    """Ending a reply cancelled or failed compacts it in that same transaction, as a complete one does."""
    cancelled = reply_written(thread, status="cancelled")
    failed = reply_written(thread, status="failed", error={"code": "provider_error", "detail": "Gone."})
    assert [row.span for row in delta_rows(cancelled)] == [len(DELTAS)]
    assert [row.span for row in delta_rows(failed)] == [len(DELTAS)]


@pytest.mark.django_db
def test_reply_taken_over_compacts_both_attempts_into_its_events(thread, settings):
    """A reply written by two workers in turn (a takeover) ends as one segment holding both attempts' deltas."""
    settings.STREAM_COMPACT_REPLIES = False
    posted = message_post(thread=thread, content="Hello", client_id=None)
    crashed = generation_claim(worker="crashed", model="scripted")
    for index, text in enumerate(DELTAS[:4]):
        generation_append(claim=crashed, text=text, first=index == 0)
    Generation.objects.filter(pk=crashed.generation_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    successor = generation_claim(worker="successor", model="scripted")
    assert (successor.message_id, successor.attempt, successor.request.partial) == (
        posted.reply.id,
        2,
        "".join(DELTAS[:4]),
    )
    for index, text in enumerate(DELTAS[4:]):
        generation_append(claim=successor, text=text, first=index == 0)
    live_before_end = the_log(thread)
    settings.STREAM_COMPACT_REPLIES = True
    generation_finish(claim=successor, status="complete")
    reply = Message.objects.get(pk=posted.reply.id)
    assert [row.span for row in delta_rows(reply)] == [len(DELTAS)]
    live = the_log(thread)
    assert live[:-1] == live_before_end and live[-1][1] == "end"
    assert_every_read_is_the_live_log(thread, live)


@pytest.mark.django_db
def test_compaction_is_three_statements_and_running_it_again_changes_nothing(
    thread, settings, django_assert_max_num_queries, django_assert_num_queries
):
    """Compacting reads, deletes and inserts once; a second run finds nothing left to merge."""
    reply, live = written_uncompacted(settings, thread)
    with django_assert_max_num_queries(3):
        assert reply_compact(message=reply) == len(DELTAS) - 1
    rows = list(Chunk.objects.filter(thread=thread).order_by("seq").values())
    with django_assert_num_queries(1):
        assert reply_compact(message=reply) == 0
    assert list(Chunk.objects.filter(thread=thread).order_by("seq").values()) == rows
    assert the_log(thread) == live


@pytest.mark.django_db
def test_compaction_merges_only_that_replys_deltas(thread, settings):
    """Compacting one reply leaves every other message's rows as they are."""
    settings.STREAM_COMPACT_REPLIES = False
    earlier = reply_written(thread)
    later = reply_written(thread, deltas=("a", "b", "c"))
    settings.STREAM_COMPACT_REPLIES = True
    reply_compact(message=later)
    assert [row.span for row in delta_rows(earlier)] == [1] * len(DELTAS)
    assert [row.span for row in delta_rows(later)] == [3]


@pytest.mark.django_db
def test_compaction_can_be_turned_off(thread, settings):
    """With STREAM_COMPACT_REPLIES off, a finished reply keeps one row per delta."""
    settings.STREAM_COMPACT_REPLIES = False
    reply = reply_written(thread)
    assert [row.span for row in delta_rows(reply)] == [1] * len(DELTAS)


def deltas(texts: list[str], *, first_seq: int = 1, seqs: list[int] | None = None) -> list[Chunk]:
    """Unsaved delta rows of one message, for the compaction rules alone."""
    began = timezone.now()
    seqs = seqs or list(range(first_seq, first_seq + len(texts)))
    return [
        Chunk(seq=seq, kind=Chunk.Kind.DELTA, text=text, created_at=began + timedelta(milliseconds=40 * index))
        for index, (seq, text) in enumerate(zip(seqs, texts, strict=True))
    ]


def test_segments_are_bounded_in_events():
    """A long reply's deltas make segments of at most SEGMENT_MAX_EVENTS events, together covering every seq once."""
    rows = deltas_compacted(deltas(["ab"] * (2 * SEGMENT_MAX_EVENTS + 3)))
    assert [row.span for row in rows] == [SEGMENT_MAX_EVENTS, SEGMENT_MAX_EVENTS, 3]
    assert [row.seq for row in rows] == [1, SEGMENT_MAX_EVENTS + 1, 2 * SEGMENT_MAX_EVENTS + 1]
    assert rows[1].event_offsets_ms[:2] == [0, 40]


def test_segments_are_bounded_in_text_bytes():
    """Segments hold at most SEGMENT_MAX_TEXT_BYTES of UTF-8 text; a delta over the bound stays a row of its own."""
    wide = "é" * 2048  # 4 KiB in UTF-8
    rows = deltas_compacted(deltas([wide] * 40 + ["x" * (SEGMENT_MAX_TEXT_BYTES + 1), "y"]))
    assert all(len(row.text.encode()) <= SEGMENT_MAX_TEXT_BYTES for row in rows if row.is_segment)
    assert [row.span for row in rows] == [16, 16, 8, 1, 1]


def test_runs_end_where_seqs_are_not_consecutive():
    """Only consecutive seqs share a segment: a gap starts a new one, and a lone delta stays as it was."""
    rows = deltas_compacted(deltas(list("abcdef"), seqs=[3, 4, 5, 7, 9, 10]))
    assert [(row.seq, row.span, row.text) for row in rows] == [(3, 3, "abc"), (7, 1, "d"), (9, 2, "ef")]


@pytest.mark.django_db
def test_pruning_deletes_old_segments_whole_and_counts_their_events(thread):
    """Retention deletes an old reply's segment with its message, counts the events it held, and leaves newer ones."""
    old = reply_written(thread)
    then = timezone.now() - timedelta(days=40)
    Message.objects.filter(thread=thread).update(created_at=then, completed_at=then)
    Chunk.objects.filter(thread=thread).update(created_at=then)  # its events were logged then too
    recent = reply_written(thread, deltas=("a", "b", "c"))
    live = the_log(thread)
    summary = chunks_prune(older_than=timedelta(days=30))
    assert summary.chunks == old.content_seq  # the old exchange's events: message, start, deltas, end
    assert not Chunk.objects.filter(message__in=[old, old.reply_to]).exists()
    assert [row.span for row in delta_rows(recent)] == [3]
    first_kept = recent.reply_to.seq
    assert chunk_events_after(thread_id=thread.id, after=first_kept - 1) == live[first_kept - 1 :]


@pytest.mark.django_db
def test_pruning_everything_keeps_the_row_of_the_newest_event(thread):
    """Pruning a settled thread keeps only the row holding its newest event, and reports every other event."""
    reply = reply_written(thread)
    then = timezone.now() - timedelta(days=40)
    Message.objects.filter(thread=thread).update(created_at=then, completed_at=then)
    Chunk.objects.filter(thread=thread).update(created_at=then)  # its events were logged then too
    summary = chunks_prune(older_than=timedelta(days=30))
    assert summary.chunks == reply.content_seq - 1
    assert list(Chunk.objects.filter(thread=thread).values_list("seq", "kind")) == [(reply.content_seq, "end")]


@pytest.mark.django_db(transaction=True)
async def test_reply_at_50_tokens_per_second_keeps_at_most_30_rows_per_1000_tokens(
    thread, user, connect, worker, settings
):
    """A reply at 50 tokens/s with 40 ms flushes writes a row per flush, but its log keeps <= 30 per 1,000 tokens."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 50
    settings.SCRIPTED_REPLY_TOKENS = 200
    settings.STREAM_FLUSH_MS = 40
    socket = await connect(thread.id, user)
    await database_sync_to_async(message_post)(thread=thread, content="Pace me", client_id=None)
    end = await socket.receive_until(lambda frame: frame["type"] == "end", timeout=30)
    tokens = end["usage"]["output_tokens"]
    log = Chunk.objects.filter(thread=thread)
    kept = await log.acount()
    written = (await log.aaggregate(events=Sum("span")))["events"]
    assert written == end["seq"]  # every event was written as a row of its own while streaming
    assert written * 1000 / tokens > 30, "streaming alone writes more rows than the target"
    assert kept * 1000 / tokens <= 30


@pytest.mark.django_db
def test_chunk_admin_page_of_a_segment_lists_its_events(admin_client, thread):
    """An operator opening a segment row sees each event it holds with its seq and text, escaped."""
    reply = reply_written(thread, deltas=("<b>bold</b>", "plain"))
    (segment,) = delta_rows(reply)
    page = admin_client.get(reverse("admin:streaming_chunk_change", args=[segment.pk])).content.decode()
    assert f"<td>{segment.seq}</td>" in page and f"<td>{segment.seq + 1}</td>" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
