"""The raw SQL helpers give the database what the ORM would (streaming/services/sql.py)."""

import datetime
import uuid

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg import pq

from chatsite.timestamps import TIMESTAMPTZ_OID, TimestampLoader
from streaming.models import Generation
from streaming.services.sql import db_id, db_uuid
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
