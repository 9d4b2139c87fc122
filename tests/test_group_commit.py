"""A worker commits all its replies' text together: one transaction per flush tick, each reply fenced alone."""

import asyncio
import math
import uuid
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from django.db import IntegrityError
from django.db.models import Sum

from streaming import committer
from streaming.compaction import ended_log
from streaming.models import Chunk, Generation
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply
from streaming.selectors import logged_reply_text
from streaming.services import endings
from streaming.services.claims import Claim
from streaming.services.commits import Write, Written, generation_commit
from streaming.worker import StreamWorker
from threads.models import Message
from threads.services import message_post, thread_create

from .conftest import RECEIVE_TIMEOUT_S
from .test_hub import eventually
from .test_metrics import sample
from .writes import crashed_worker_wrote, generation_claim

pytestmark = pytest.mark.django_db(transaction=True)

REPLIES = 8


@pytest.fixture
def recorded_rounds(monkeypatch):
    """Record the writes of each of the worker's group commits (each runs the real `generation_commit`)."""
    rounds: list[list[Write]] = []

    def generation_commit_recorded(*, writes, retrying=False):
        rounds.append(list(writes))
        return generation_commit(writes=writes, retrying=retrying)

    monkeypatch.setattr(committer, "ageneration_commit", database_sync_to_async(generation_commit_recorded))
    return rounds


async def test_concurrent_replies_share_transactions(user, worker, settings, recorded_rounds):
    """Replies streaming at once commit together: far fewer transactions than delta events, every text exact."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    settings.SCRIPTED_REPLY_TOKENS = 60
    settings.STREAM_FLUSH_MS = 40
    threads = [await database_sync_to_async(thread_create)(owner=user, title=f"t{n}") for n in range(REPLIES)]
    posts = [
        await database_sync_to_async(message_post)(thread=thread, content=f"Question {n}", client_id=None)
        for n, thread in enumerate(threads)
    ]
    replies = [post.reply.id for post in posts]
    await _until_ended(replies)
    deltas = (await Chunk.objects.filter(message_id__in=replies, kind="delta").aaggregate(n=Sum("span")))["n"]
    assert deltas >= REPLIES * 5, "each reply was flushed several times"
    assert len(recorded_rounds) < deltas / 3, f"{len(recorded_rounds)} transactions for {deltas} delta events"
    assert max(map(len, recorded_rounds)) >= REPLIES // 2, "rounds carried several replies at once"
    for n, reply_id in enumerate(replies):
        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == Message.Status.COMPLETE
        assert reply.content == scripted_reply([Turn("user", f"Question {n}")], 60)


@pytest.fixture
def read_back(monkeypatch):
    """Record the replies whose log their end read back from the database."""
    messages: list = []

    def ended_log_recorded(ended, **kinds):
        messages.extend(message.id for message in ended)
        return ended_log(ended, **kinds)

    monkeypatch.setattr(endings, "ended_log", ended_log_recorded)
    return messages


async def test_a_workers_replies_of_text_alone_end_without_reading_their_log_back(user, worker, settings, read_back):
    """The worker wrote every row of such a reply and saw each commit: its end compacts them from memory."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    settings.SCRIPTED_REPLY_TOKENS = 30
    threads = [await database_sync_to_async(thread_create)(owner=user, title=f"t{n}") for n in range(3)]
    posts = [
        await database_sync_to_async(message_post)(thread=thread, content=f"Question {n}", client_id=None)
        for n, thread in enumerate(threads)
    ]
    await _until_ended([post.reply.id for post in posts])

    assert read_back == []
    for n, post in enumerate(posts):
        reply = await Message.objects.aget(pk=post.reply.id)
        assert reply.content == scripted_reply([Turn("user", f"Question {n}")], 30)
        assert await database_sync_to_async(logged_reply_text)(message=reply) == reply.content


async def test_a_taken_over_reply_reads_its_log_back_when_it_ends(thread, user, worker, settings, read_back):
    """Rows an earlier attempt logged are not the successor's to know: its end reads the log."""
    posted, _ = await database_sync_to_async(crashed_worker_wrote)(thread, tokens=5)
    await _until_ended([posted.reply.id])

    assert read_back == [posted.reply.id]
    reply = await Message.objects.aget(pk=posted.reply.id)
    assert reply.content == scripted_reply([Turn("user", "Tell me more")], settings.SCRIPTED_REPLY_TOKENS)


class TickWriter:
    """A reply as the committer sees it, with text, an end or a renewal waiting as a test sets them."""

    def __init__(self, *, renew_at: float = math.inf) -> None:
        self.generation_id = uuid.uuid4()
        self.claim = SimpleNamespace(generation_id=self.generation_id, thread_id=uuid.uuid4())
        self.renew_at = renew_at
        self.text = ""
        self.ended = False

    def has_text(self) -> bool:
        return bool(self.text)

    def take_write(self) -> Write:
        write = Write(claim=self.claim, text=self.text, end={"status": "complete"} if self.ended else None)
        self.text = ""
        self.renew_at = math.inf
        return write

    def written(self, write, result) -> None:
        pass

    def abandoned(self, error) -> None:
        raise AssertionError(error)


async def committing_until(group: committer.Committer, condition, what: str) -> None:
    """Run `group` until `condition` holds (see `eventually`), then stop it."""
    running = asyncio.create_task(group.run())
    try:
        await eventually(condition, what)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_renewals_and_ends_ride_the_next_flush_tick(settings, monkeypatch):
    """A lease renewal or an end waits for the tick that some reply's text armed; the ends commit after the text.

    At load a reply ends or renews every few milliseconds: a round for each would hold up
    every other reply's text behind it, and so would the ends' heavier writes in the text's round.
    """
    settings.STREAM_FLUSH_MS = 200
    rounds: list[tuple[float, set]] = []

    async def commit_recorded(*, writes, retrying=False):
        rounds.append((asyncio.get_running_loop().time(), {write.claim.generation_id for write in writes}))
        return {write.claim.generation_id: Written(lease_lost=False) for write in writes}

    monkeypatch.setattr(committer, "ageneration_commit", commit_recorded)
    loop = asyncio.get_running_loop()
    group = committer.Committer()
    texting, renewing, ending = TickWriter(), TickWriter(renew_at=loop.time()), TickWriter()
    for writer in (texting, renewing, ending):
        group.add(writer)
    texting.text = "Hello"
    group.text_buffered()
    armed_at = loop.time()
    ending.ended = True
    group.end(ending)
    await committing_until(group, lambda: len(rounds) == 2, "the tick's rounds commit")
    assert all(committed_at >= armed_at + 0.2 for committed_at, _ in rounds), "the rounds waited for the tick"
    # The text first, then the ends: their heavier writes do not delay its tokens.
    assert [generations for _, generations in rounds] == [
        {texting.generation_id, renewing.generation_id},
        {ending.generation_id},
    ]


async def test_a_renewal_has_a_round_of_its_own_when_no_tick_is_coming(settings, monkeypatch):
    """With no text buffered, a lease due for renewal is renewed at once."""
    rounds: list[set] = []

    async def commit_recorded(*, writes, retrying=False):
        rounds.append({write.claim.generation_id for write in writes})
        return {write.claim.generation_id: Written(lease_lost=False) for write in writes}

    monkeypatch.setattr(committer, "ageneration_commit", commit_recorded)
    group = committer.Committer()
    renewing = TickWriter(renew_at=asyncio.get_running_loop().time())
    group.add(renewing)
    await committing_until(group, lambda: rounds, "a round commits")
    assert rounds == [{renewing.generation_id}]


async def test_a_tick_held_up_by_a_slow_round_is_measured_late(settings, monkeypatch):
    """chatsite_commit_tick_lateness_seconds: how long a tick's text waited for the database thread to be free."""
    settings.STREAM_FLUSH_MS = 50
    slow_round_s = 0.3
    group = committer.Committer()
    writer = TickWriter()
    group.add(writer)
    rounds: list[set] = []

    async def commit_slowly(*, writes, retrying=False):
        rounds.append({write.claim.generation_id for write in writes})
        if len(rounds) == 1:
            writer.text = "more"  # arms the next tick, due long before this round ends
            group.text_buffered()
            await asyncio.sleep(slow_round_s)  # a transaction that takes this long
        return {write.claim.generation_id: Written(lease_lost=False) for write in writes}

    monkeypatch.setattr(committer, "ageneration_commit", commit_slowly)
    count, total = (
        sample("chatsite_commit_tick_lateness_seconds_count"),
        sample("chatsite_commit_tick_lateness_seconds_sum"),
    )
    writer.text = "Hello"
    group.text_buffered()
    await committing_until(group, lambda: len(rounds) == 2, "the late tick's round commits")

    assert sample("chatsite_commit_tick_lateness_seconds_count") == count + 2
    late_by = sample("chatsite_commit_tick_lateness_seconds_sum") - total
    assert late_by >= slow_round_s - settings.STREAM_FLUSH_MS / 1000, late_by


def _claimed_reply(user) -> Claim:
    """Post a message in a new thread and claim its reply, as a worker would."""
    message_post(thread=thread_create(owner=user, title="t"), content="Hi", client_id=None)
    return generation_claim(worker="w", model="scripted")


async def _reply_from_a_worker(user, content: str) -> Message:
    """Post `content` in a new thread; return its reply once a worker started with the current settings ended it."""
    worker = StreamWorker(name="test-worker")
    task = asyncio.create_task(worker.run())
    try:
        thread = await database_sync_to_async(thread_create)(owner=user, title=content)
        posted = await database_sync_to_async(message_post)(thread=thread, content=content, client_id=None)
        await _until_ended([posted.reply.id])
    finally:
        worker.stop()
        await asyncio.wait_for(task, RECEIVE_TIMEOUT_S)
    return await Message.objects.aget(pk=posted.reply.id)


async def _until_ended(reply_ids, timeout_s: float = RECEIVE_TIMEOUT_S) -> None:
    """Return once every reply has ended, as the database records it."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await Message.objects.filter(pk__in=reply_ids, status=Message.Status.STREAMING).aexists():
        assert asyncio.get_running_loop().time() < deadline, "the replies did not all end"
        await asyncio.sleep(0.05)


@pytest.mark.django_db
def test_a_lost_lease_costs_only_its_own_write(user):
    """In one group commit, a reply whose lease was taken over writes nothing; the others are written (I8)."""
    first, second = (thread_create(owner=user, title=title) for title in ("one", "two"))
    message_post(thread=first, content="Hi", client_id=None)
    message_post(thread=second, content="Hello", client_id=None)
    stale, held = generation_claim(worker="w", model="scripted"), generation_claim(worker="w", model="scripted")
    # Another worker took the first generation over: a new lease token.
    Generation.objects.filter(pk=stale.generation_id).update(lease_token=held.lease_token)

    written = generation_commit(
        writes=[Write(claim=stale, text="late", first=True), Write(claim=held, text="on time", first=True)]
    )

    assert written[stale.generation_id].lease_lost and written[stale.generation_id].events == []
    assert not written[held.generation_id].lease_lost
    assert [kind for _, kind, _ in written[held.generation_id].events] == ["delta"]
    assert logged_reply_text(message=Message.objects.get(pk=stale.message_id)) == ""
    assert logged_reply_text(message=Message.objects.get(pk=held.message_id)) == "on time"
    assert not Chunk.objects.filter(message_id=stale.message_id, kind="delta").exists()


@pytest.mark.django_db
def test_a_write_with_its_end_commits_text_then_end_in_seq_order(user):
    """A reply's last text and its `end` go in one write: the delta's seq precedes the end's."""
    claim = _claimed_reply(user)

    written = generation_commit(
        writes=[Write(claim=claim, text="All done.", first=True, end={"status": Message.Status.COMPLETE})]
    )

    events = written[claim.generation_id].events
    assert [(seq, kind) for seq, kind, _ in events] == [(3, "delta"), (4, "end")]
    reply = Message.objects.get(pk=claim.message_id)
    assert (reply.content, reply.status, reply.content_seq) == ("All done.", Message.Status.COMPLETE, 4)
    assert Generation.objects.get(pk=claim.generation_id).status == Generation.Status.DONE


async def test_a_long_reply_keeps_its_lease(user, settings):
    """Rounds renew each reply's lease about once a second, so a reply outliving many leases is never taken over."""
    settings.GENERATION_LEASE_SECONDS = 0.6  # renewed every 0.2 s
    settings.STREAM_WORKER_POLL_SECONDS = 0.1  # the worker looks for expired leases, its own included
    settings.SCRIPTED_TOKENS_PER_SECOND = 20
    settings.SCRIPTED_REPLY_TOKENS = 40  # two seconds: more than three leases
    reply = await _reply_from_a_worker(user, "Go on")
    generation = await Generation.objects.aget(message_id=reply.id)
    assert generation.attempts == 1, "the reply was taken over: its lease lapsed"
    assert reply.content == scripted_reply([Turn("user", "Go on")], 40)


@pytest.mark.django_db
def test_only_writes_that_ask_renew_their_lease(user):
    """A flush that does not ask leaves the lease as it was: renewing rewrites an indexed row; once a second will do."""
    claim = _claimed_reply(user)
    generation_commit(writes=[Write(claim=claim, text="a", first=True)])
    renewed_until = Generation.objects.get(pk=claim.generation_id).lease_expires_at

    generation_commit(writes=[Write(claim=claim, text="b", committed_chars=1, renew=False)])
    assert Generation.objects.get(pk=claim.generation_id).lease_expires_at == renewed_until

    generation_commit(writes=[Write(claim=claim, text="c", committed_chars=2, renew=True)])
    assert Generation.objects.get(pk=claim.generation_id).lease_expires_at > renewed_until
    assert logged_reply_text(message=Message.objects.get(pk=claim.message_id)) == "abc"


@pytest.mark.django_db
def test_text_is_logged_byte_for_byte_whatever_its_characters(user):
    """Tabs, newlines, backslashes and emoji survive the log's bulk write (COPY on PostgreSQL) as they were."""
    claim = _claimed_reply(user)
    texts = ["tab\there\n", "back\\slash \\N \\. ", "é 😀\r\n", "\\x00 is text, not NUL"]
    for number, text in enumerate(texts):
        generation_commit(writes=[Write(claim=claim, text=text, first=number == 0)])
    logged = Chunk.objects.filter(message_id=claim.message_id, kind="delta").order_by("seq")
    assert list(logged.values_list("text", flat=True)) == texts


async def test_a_refused_round_is_taken_over_and_the_committer_goes_on(user, settings, monkeypatch, caplog):
    """A round the database refuses (not an outage) abandons its replies, which are taken over and finished."""
    settings.GENERATION_LEASE_SECONDS = 0.6
    settings.STREAM_WORKER_POLL_SECONDS = 0.1
    refused = []

    def generation_commit_refused_once(*, writes, retrying=False):
        if not refused:
            refused.append(len(writes))
            raise IntegrityError("refused for the test")
        return generation_commit(writes=writes, retrying=retrying)

    monkeypatch.setattr(committer, "ageneration_commit", database_sync_to_async(generation_commit_refused_once))
    reply = await _reply_from_a_worker(user, "Try me")
    assert refused, "a round was refused"
    assert "generation.abandoned" in caplog.text and "reason=write_failed" in caplog.text
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == scripted_reply([Turn("user", "Try me")], settings.SCRIPTED_REPLY_TOKENS)
    assert (await Generation.objects.aget(message_id=reply.id)).attempts == 2


@pytest.mark.django_db
def test_a_reply_is_written_to_its_message_once_when_it_ends(user):
    """Flushes only log deltas; the message's content is written once, at the end, from them all."""
    claim = _claimed_reply(user)
    started = Message.objects.get(pk=claim.message_id)
    generation_commit(writes=[Write(claim=claim, text="Once ", first=True)])
    generation_commit(writes=[Write(claim=claim, text="upon ", committed_chars=5)])

    during = Message.objects.get(pk=claim.message_id)
    assert (during.content, during.content_seq) == ("", started.content_seq), "the row was not rewritten per flush"
    assert logged_reply_text(message=during) == "Once upon "

    generation_commit(writes=[Write(claim=claim, text="a time.", committed_chars=10, end={"status": "complete"})])
    assert Message.objects.get(pk=claim.message_id).content == "Once upon a time."


@pytest.mark.django_db
def test_a_snapshot_seq_gives_the_reply_text_at_that_seq_after_compaction(user):
    """A streaming reply read at a snapshot's seq gives its text then, even once it ended and was compacted (I4)."""
    claim = _claimed_reply(user)
    generation_commit(writes=[Write(claim=claim, text="One ", first=True)])
    second = generation_commit(writes=[Write(claim=claim, text="two ", committed_chars=4)])[claim.generation_id]
    snapshot_seq = second.events[0][0]  # a snapshot taken right after the second flush
    generation_commit(writes=[Write(claim=claim, text="three.", committed_chars=8, end={"status": "complete"})])
    assert Chunk.objects.filter(message_id=claim.message_id, kind="delta").count() == 1, "compacted into one segment"

    reply = Message.objects.get(pk=claim.message_id)
    assert logged_reply_text(message=reply, upto_seq=snapshot_seq) == "One two "
    assert logged_reply_text(message=reply) == reply.content == "One two three."
