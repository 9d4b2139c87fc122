"""The raw SQL helpers give the database what the ORM would (streaming/services/sql.py)."""

import uuid

import pytest
from django.conf import settings
from django.db import connection

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
