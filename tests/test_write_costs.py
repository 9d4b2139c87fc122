"""The writes every reply makes cost a fixed handful of statements: a send, a worker's batch of claims, its ends."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from streaming.compaction import deltas_compacted, ended_log
from streaming.models import Chunk, Generation
from streaming.providers import Turn
from streaming.services.claims import Claim, generation_claim_many
from streaming.services.commits import Write, generation_commit
from threads.models import Message
from threads.services import message_post, reply_retry, thread_create

from .writes import generation_append, reply_written

pytestmark = pytest.mark.django_db


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The statements run, without the savepoints that wrap a transaction inside a test's own."""
    return [query["sql"] for query in captured if "SAVEPOINT" not in query["sql"]]


def claimed(limit: int) -> tuple[list[Claim], int]:
    """Claim up to `limit` generations; return the claims and the statements it took."""
    with CaptureQueriesContext(connection) as captured:
        claims = generation_claim_many(worker="claims-test", model="scripted", limit=limit)
    return claims, len(statements(captured))


def test_a_batch_costs_the_statements_of_one_claim(user):
    for n in range(9):
        message_post(thread=thread_create(owner=user), content=f"Question {n}", client_id=None)

    one, statements_for_one = claimed(1)
    eight, statements_for_eight = claimed(8)

    assert (len(one), len(eight)) == (1, 8)
    assert statements_for_eight == statements_for_one
    assert Generation.objects.filter(status=Generation.Status.RUNNING, worker="claims-test").count() == 9
    assert set(Message.objects.filter(role="assistant").values_list("model", flat=True)) == {"scripted"}


@pytest.mark.parametrize("named_author", [False, True], ids=["owner implied", "owner named (a WebSocket send)"])
def test_a_send_takes_nine_statements(thread, named_author):
    reply_written(thread)  # a send into a thread with history, the reply before it ended
    sent_at = timezone.now()
    with CaptureQueriesContext(connection) as captured:
        posted = message_post(
            thread=thread, content="Second", client_id=uuid.uuid4(), author=thread.owner if named_author else None
        )

    # Lock, the active path's last message (which the new one follows), repeat and busy checks
    # together, rate check (with the lock on the person), seqs, both messages, generation, log rows,
    # and the send's stamp in the rate ledger, which deleting threads cannot undo.
    assert len(statements(captured)) == 9, "\n".join(statements(captured))

    seq = posted.message.seq
    assert Message.objects.filter(thread=thread, seq__gte=seq).count() == 2
    assert (posted.reply.seq, posted.reply.reply_to_id) == (seq + 1, posted.message.id)
    assert Generation.objects.get(message=posted.reply).status == Generation.Status.QUEUED
    logged = Chunk.objects.filter(thread=thread, seq__gte=seq).values_list("seq", "kind")
    assert list(logged) == [(seq, "message"), (seq + 1, "start")]
    thread.refresh_from_db()
    assert thread.last_seq == seq + 1
    assert thread.updated_at >= sent_at, "a send is activity: the thread moves up the list"


def test_the_rate_check_reads_one_row_however_many_sends_it_counts(user, thread, settings):
    settings.CHAT_SENDS_PER_MINUTE = 1000
    earlier = thread_create(owner=user)  # the limit counts the person's sends in all their threads
    Message.objects.bulk_create(
        Message(thread=earlier, role="user", content=f"m{seq}", seq=seq, content_seq=seq) for seq in range(1, 31)
    )
    with CaptureQueriesContext(connection) as captured:
        message_post(thread=thread, content="One more", client_id=None)
    (rate_check,) = [sql for sql in statements(captured) if "created_at >=" in sql]
    assert "LIMIT 1 OFFSET 999" in rate_check


def test_each_reply_in_a_batch_gets_its_own_conversation(user):
    continued, retried_thread = thread_create(owner=user), thread_create(owner=user)
    reply_written(continued, deltas=("Hi", " there"))
    failed = reply_written(retried_thread, deltas=("Par", "tial"), status="failed")
    follow_up = message_post(thread=continued, content="And then?", client_id=None).reply
    retry = reply_retry(thread=retried_thread, reply=failed)
    fresh = message_post(thread=thread_create(owner=user), content="Alone", client_id=None).reply

    requests = {claim.message_id: claim.request for claim in claimed(10)[0]}

    assert requests[follow_up.id].turns == [
        Turn("user", "Hello"),
        Turn("assistant", "Hi there"),
        Turn("user", "And then?"),
    ]
    # A retry answers its message again: the failed reply after that message is not part of it.
    assert requests[retry.id].turns == [Turn("user", "Hello")]
    assert requests[fresh.id].turns == [Turn("user", "Alone")]
    assert {request.partial for request in requests.values()} == {""}, "first attempts start from no text"


def test_a_sends_rows_hold_what_its_instances_hold(thread):
    """A send inserts its messages and log rows in SQL of its own: each reads back as the instance it came from."""
    posted = message_post(thread=thread, content="Exactly this", client_id=uuid.uuid4())

    for written in (posted.message, posted.reply):
        assert not written._state.adding, "the instance knows it is saved"
        stored = Message.objects.get(pk=written.pk)
        for field in Message._meta.concrete_fields:
            assert getattr(stored, field.attname) == getattr(written, field.attname), field.name
    assert posted.message.created_at is not None and posted.reply.parts == []
    logged = Chunk.objects.filter(message__in=[posted.message, posted.reply]).order_by("seq")
    assert [(chunk.kind, chunk.span, chunk.seq_last) for chunk in logged] == [
        ("message", 1, posted.message.seq),
        ("start", 1, posted.reply.seq),
    ]


def ended_together(claims: list[Claim]) -> int:
    """End the claimed replies in one round, as a worker's tick does; return the statements it took."""
    with CaptureQueriesContext(connection) as captured:
        written = generation_commit(
            writes=[Write(claim=claim, end={"status": "complete"}, renew=False) for claim in claims]
        )
    assert not any(result.lease_lost for result in written.values())
    return len(statements(captured))


def test_a_round_of_ends_costs_the_statements_of_one_end(user):
    for n in range(4):
        message_post(thread=thread_create(owner=user), content=f"Question {n}", client_id=None)
    claims, _ = claimed(4)
    for claim in claims:
        generation_append(claim=claim, text="Hel", first=True)
        generation_append(claim=claim, text="lo", first=False)

    statements_for_one = ended_together(claims[:1])
    statements_for_three = ended_together(claims[1:])

    # The fence, the messages, one read of the replies' logs (a reply of text alone needs no
    # second read for its parts), seqs, the messages' text, the generations, the deltas
    # replaced, and the segments and `end` rows.
    assert statements_for_three == statements_for_one == 8
    for claim in claims:
        reply = Message.objects.get(pk=claim.message_id)
        assert (reply.content, reply.status, reply.parts) == ("Hello", "complete", [])
        rows = Chunk.objects.filter(message=reply, seq__gt=reply.seq).order_by("seq")
        assert [(row.kind, row.span, row.text) for row in rows] == [("delta", 2, "Hello"), ("end", 1, "")]


def test_an_end_whose_writer_knows_the_log_compacts_it_without_reading_it_back(user):
    message_post(thread=thread_create(owner=user), content="Question", client_id=None)
    (claim,), _ = claimed(1)
    written = [generation_append(claim=claim, text=text, first=n == 0) for n, text in enumerate(("Hel", "lo", " you"))]
    reply = Message.objects.get(pk=claim.message_id)
    logged = [result.delta for result in written]
    assert logged == ended_log([reply]), "the writer knows each row as the log reads it back"
    deltas = list(Chunk.objects.filter(message=reply, kind="delta").order_by("seq"))

    with CaptureQueriesContext(connection) as captured:
        generation_commit(writes=[Write(claim=claim, end={"status": "complete"}, renew=False, logged=tuple(logged))])

    # As a round of ends (above), without its read of the replies' logs.
    assert len(statements(captured)) == 7, "\n".join(statements(captured))
    assert not [sql for sql in statements(captured) if sql.startswith("SELECT") and "streaming_chunk" in sql]
    reply.refresh_from_db()
    assert (reply.content, reply.status) == ("Hello you", "complete")
    (expected,) = deltas_compacted(deltas)
    compacted = Chunk.objects.get(message=reply, kind="delta")
    fields = ("seq", "span", "text", "event_lengths", "event_offsets_ms", "created_at")
    assert [getattr(compacted, name) for name in fields] == [getattr(expected, name) for name in fields]


def test_an_end_whose_text_a_retry_found_logged_reads_the_log_back(user):
    """Text whose row the writer was not told of (its commit's answer was lost) is read back, not left out."""
    message_post(thread=thread_create(owner=user), content="Question", client_id=None)
    (claim,), _ = claimed(1)
    first = generation_append(claim=claim, text="Hel", first=True)
    generation_commit(writes=[Write(claim=claim, text="lo", committed_chars=3)])  # its answer "lost"

    retried = Write(claim=claim, text="lo", committed_chars=3, end={"status": "complete"}, logged=(first.delta,))
    generation_commit(writes=[retried], retrying=True)

    reply = Message.objects.get(pk=claim.message_id)
    assert (reply.content, reply.status) == ("Hello", "complete")
    assert list(Chunk.objects.filter(message=reply, kind="delta").values_list("span", "text")) == [(2, "Hello")]
