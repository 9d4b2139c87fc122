"""Seq allocation under concurrent writers (I1), on PostgreSQL where writers really run in parallel."""

import threading

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection, transaction

from streaming.models import Chunk
from streaming.services.log import chunks_record, seq_allocate
from threads.models import Thread
from threads.services import _lock_thread, message_post

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


def locked_elsewhere(table: str, pk) -> bool:
    """Return whether another connection finds the row of `table` with primary key `pk` locked."""
    outcome: list[bool] = []

    def try_lock() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE NOWAIT", [pk])
            outcome.append(False)
        except OperationalError:  # lock_not_available
            outcome.append(True)
        finally:
            connection.close()

    other = threading.Thread(target=try_lock)
    other.start()
    other.join()
    return outcome == [True]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("named_author", [False, True], ids=["owner implied", "owner named (a WebSocket send)"])
def test_a_send_by_the_owner_holds_the_thread_and_the_owner_until_it_commits(thread, named_author):
    """Writers to the thread, and the owner's counted writes anywhere, wait for the send (threads.services)."""
    owner = thread.owner
    with transaction.atomic():
        locked = _lock_thread(thread, person=owner if named_author else None)

        assert locked.pk == thread.pk and locked.owner.pk == owner.pk
        assert locked_elsewhere(Thread._meta.db_table, thread.pk)
        assert locked_elsewhere(User._meta.db_table, owner.pk)
    assert not locked_elsewhere(User._meta.db_table, owner.pk), "released at commit"


@pytest.mark.django_db
@pytest.mark.parametrize("named_author", [False, True], ids=["owner implied", "owner named (a WebSocket send)"])
def test_a_send_to_a_thread_deleted_since_it_was_read_writes_nothing(thread, named_author):
    owner = thread.owner
    Thread.objects.filter(pk=thread.pk).delete()
    with pytest.raises(Thread.DoesNotExist):
        message_post(thread=thread, content="Too late", client_id=None, author=owner if named_author else None)
    assert not Thread.objects.filter(pk=thread.pk).exists()
