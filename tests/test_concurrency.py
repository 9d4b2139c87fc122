"""Seq allocation under concurrent writers (I1), on PostgreSQL where writers really run in parallel."""

import threading

import pytest
from django.db import connection, transaction

from streaming.models import Chunk
from streaming.services.log import chunks_record, seq_allocate
from threads.services import message_post

WRITERS = 8
APPENDS_EACH = 40


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_never_gap_or_repeat(thread):
    """Eight threads appending to one thread's log at once produce seqs 1..N with no gap or repeat."""
    reply = message_post(thread=thread, content="Hi", client_id=None).reply
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def append_many() -> None:
        try:
            start.wait()
            for _ in range(APPENDS_EACH):
                with transaction.atomic():
                    seq = seq_allocate(thread_id=thread.id)
                    delta = Chunk(thread_id=thread.id, seq=seq, message_id=reply.id, kind="delta", text=".")
                    chunks_record(thread_id=thread.id, chunks=[delta], messages=[])
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)
        finally:
            connection.close()

    writers = [threading.Thread(target=append_many) for _ in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert not errors
    seqs = list(Chunk.objects.filter(thread=thread).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 2 + WRITERS * APPENDS_EACH + 1))
    thread.refresh_from_db()
    assert thread.last_seq == seqs[-1]
