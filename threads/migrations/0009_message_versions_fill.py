"""Place the messages written before versions in the tree: each follows the message before it.

A reply follows the message it answers; a user message follows the newest message before it
(the last reply shown when it was sent). The active path runs up from each thread's newest
message; earlier retries of a reply are the versions left off it.

Apart from the schema change (0008): on PostgreSQL, updating rows of a table whose schema
changed in the same transaction fails with pending trigger events.
"""

from django.db import migrations


def fill_parents(apps, schema_editor):
    Message = apps.get_model("threads", "Message")
    thread_ids = Message.objects.values_list("thread_id", flat=True).distinct().order_by()
    for thread_id in thread_ids.iterator():
        rows = list(
            Message.objects.filter(thread_id=thread_id).order_by("seq").values_list("id", "role", "reply_to_id")
        )
        parents = {}
        previous = None
        for message_id, role, reply_to_id in rows:
            parents[message_id] = reply_to_id if role == "assistant" and reply_to_id else previous
            previous = message_id
        on_path = set()
        node = previous
        while node is not None:
            on_path.add(node)
            node = parents[node]
        changed = [
            Message(id=message_id, parent_id=parents[message_id], on_path=message_id in on_path)
            for message_id, _, _ in rows
            if parents[message_id] is not None or message_id not in on_path
        ]
        Message.objects.bulk_update(changed, ["parent", "on_path"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [("threads", "0008_message_versions")]

    operations = [migrations.RunPython(fill_parents, migrations.RunPython.noop, elidable=True)]
