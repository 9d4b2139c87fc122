"""Leave room in PostgreSQL pages for the rows that change on every flush.

A reply's message gets its text appended on every flush tick, and its thread's `last_seq`
goes up: with full pages the new row version lands on another page, which means an entry
in every index of the table (a message has five). With a quarter of each page kept free,
most of those updates stay on their page as heap-only tuples, touching no index.
"""
from django.db import migrations

FILLFACTOR = 75
TABLES_UPDATED_PER_FLUSH = ("Message", "Thread")


def storage_set(clause: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for name in TABLES_UPDATED_PER_FLUSH:
            table = schema_editor.quote_name(apps.get_model("threads", name)._meta.db_table)
            schema_editor.execute(f"ALTER TABLE {table} {clause}")

    return apply


class Migration(migrations.Migration):
    dependencies = [("threads", "0002_apitoken")]

    operations = [
        migrations.RunPython(storage_set(f"SET (fillfactor = {FILLFACTOR})"), storage_set("RESET (fillfactor)")),
    ]
