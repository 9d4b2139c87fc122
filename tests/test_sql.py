"""The raw SQL helpers give the database what the ORM would (streaming/services/sql.py)."""

import datetime
import uuid

import psycopg._queries
import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from psycopg import pq

from chatsite.timestamps import TIMESTAMPTZ_OID, TimestampLoader
from streaming.models import Generation
from streaming.services.log import seq_allocate_each
from streaming.services.sql import (
    batch_cursor,
    db_id,
    db_uuid,
    numbered,
    objects_insert,
    placeholders,
    returned_uuid,
    update_from_values,
)
from threads.models import Thread

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", [Thread, Generation])
def test_a_uuid_primary_key_goes_to_the_database_as_the_field_would_send_it(model):
    pk = uuid.uuid4()
    as_the_field_sends_it = model._meta.pk.get_db_prep_value(pk, connection)

    assert db_id(model, pk) == as_the_field_sends_it
    assert db_id(model, str(pk)) == as_the_field_sends_it, "its text form too"
    assert db_uuid(pk) == Generation._meta.get_field("lease_token").get_db_prep_value(pk, connection)


def test_a_raw_query_finds_the_row_by_its_converted_id(user):
    thread = Thread.objects.create(owner=user)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {Thread._meta.db_table} WHERE id = %s", [db_id(Thread, thread.pk)])
        assert cursor.fetchone() == (1,)


@pytest.mark.postgres
def test_a_statement_a_connection_runs_again_and_again_is_prepared_there(user):
    """DATABASE_PREPARED_STATEMENTS (on by default): PostgreSQL parses and plans it once, not on every run."""
    thread = Thread.objects.create(owner=user)
    for _ in range(settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] + 1):
        assert Thread.objects.filter(pk=thread.pk).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]

    assert any(Thread._meta.db_table in statement and "$1" in statement for statement in prepared), prepared


def _timestamp_loader(adapters):
    return adapters.get_loader(TIMESTAMPTZ_OID, pq.Format.TEXT)


@pytest.mark.postgres
def test_timestamps_are_read_by_the_c_parser_in_djangos_time_zone(user):
    """Every connection reads timestamptz through chatsite.timestamps, and Django's cursors keep it."""
    Thread.objects.create(owner=user)
    with connection.cursor() as cursor:
        # Django replaces a connection's loader on each cursor whose time zone it does not share.
        loader = _timestamp_loader(cursor.cursor.adapters)
        cursor.execute("SELECT '2026-01-01 12:00:00.123456+02'::timestamptz")
        (read,) = cursor.fetchone()

    assert issubclass(loader, TimestampLoader), loader
    assert loader.timezone == connection.timezone
    assert read == datetime.datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    assert read.tzinfo is connection.timezone  # as Django's own loader sets it


@pytest.mark.postgres
def test_a_timestamp_reads_back_as_it_was_saved(user):
    """Through the ORM: a model's time, saved and read again, is the same aware datetime."""
    saved = timezone.now().replace(microsecond=654321)
    thread = Thread.objects.create(owner=user)
    Thread.objects.filter(pk=thread.pk).update(created_at=saved)

    assert Thread.objects.values_list("created_at", flat=True).get(pk=thread.pk) == saved


def test_a_batch_statements_placeholders_are_numbered_as_postgresql_numbers_parameters():
    statement = "UPDATE t SET a = %s FROM (VALUES (%s, %s), (%s, %s)) AS new WHERE id = new.column1"

    assert numbered(statement) == "UPDATE t SET a = $1 FROM (VALUES ($2, $3), ($4, $5)) AS new WHERE id = new.column1"
    assert numbered("SELECT 1") == "SELECT 1"
    with pytest.raises(AssertionError, match="only %s placeholders"):
        numbered("SELECT 1 WHERE a LIKE 'x%%' AND b = %s")


def _threads(user, count):
    return Thread.objects.bulk_create([Thread(owner=user, title=f"thread {number}") for number in range(count)])


def test_a_batch_statement_writes_every_row_and_is_logged_like_any_other(user):
    threads = _threads(user, 60)  # 120 parameters: more than psycopg parses once and keeps
    with CaptureQueriesContext(connection) as queries:
        update_from_values(
            Thread,
            columns=("id", "title"),
            rows=[(db_id(Thread, thread.pk), f"renamed {thread.title}") for thread in threads],
            assignments="title = {title}",
        )

    assert sorted(Thread.objects.values_list("title", flat=True)) == sorted(f"renamed {t.title}" for t in threads)
    assert len(queries) == 1 and queries[0]["sql"].startswith(f"UPDATE {Thread._meta.db_table}"), (
        queries.captured_queries
    )


@pytest.mark.postgres
def test_psycopg_does_not_parse_a_batch_statement_for_its_placeholders(user, monkeypatch):
    """Each batch size is a text of its own: psycopg parsed each anew, a quarter of a round's CPU."""
    parsed = []
    for name in ("_query2pg", "_query2pg_nocache"):
        parse = getattr(psycopg._queries, name)
        monkeypatch.setattr(
            psycopg._queries, name, lambda query, encoding, parse=parse: parsed.append(query) or parse(query, encoding)
        )
    threads = _threads(user, 60)
    parsed.clear()

    with transaction.atomic():
        with batch_cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Thread._meta.db_table} WHERE id IN ({placeholders(threads)}) AND title <> %s",
                [*(db_id(Thread, thread.pk) for thread in threads), ""],
            )
            found = {returned_uuid(thread_id) for (thread_id,) in cursor.fetchall()}
        seqs = seq_allocate_each(thread_ids={thread.pk for thread in threads})

    assert found == {thread.pk for thread in threads}
    assert seqs == {thread.pk: 1 for thread in threads}
    assert parsed == []


@pytest.mark.postgres
def test_a_batch_statement_refused_raises_djangos_error(user):
    """The committer tells an outage (retried) from a refusal (given up) by Django's exception classes."""
    (thread,) = _threads(user, 1)
    duplicate = Thread(pk=thread.pk, owner=user, title="again")

    with pytest.raises(IntegrityError), transaction.atomic():
        objects_insert([duplicate])
    assert Thread.objects.get(pk=thread.pk).title == thread.title
