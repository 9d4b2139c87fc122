"""Leave room in PostgreSQL pages for the thread rows that change on every flush.

Every flush tick bumps the `last_seq` of each thread it writes to: with full pages the new
row version lands on another page, which means an entry in every index of the table. With
a quarter of each page kept free, those updates stay on their page as heap-only tuples,
touching no index.
"""

from django.db import migrations

FILLFACTOR = 75


def storage_set(clause: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            table = schema_editor.quote_name(apps.get_model("threads", "Thread")._meta.db_table)
            schema_editor.execute(f"ALTER TABLE {table} {clause}")

    return apply


class Migration(migrations.Migration):
    dependencies = [("threads", "0002_apitoken")]

    operations = [
        migrations.RunPython(storage_set(f"SET (fillfactor = {FILLFACTOR})"), storage_set("RESET (fillfactor)")),
    ]
