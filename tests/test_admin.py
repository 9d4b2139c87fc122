"""The admin shows threads, messages and streams read-only, times every chunk, and runs the operators' actions."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from streaming.models import Chunk, Generation
from streaming.selectors import TIMELINE_PAGE_SIZE
from threads.models import Message, Thread
from threads.services import message_post, reply_regenerate, thread_create
from threads.versions import version_switch

from .writes import generation_append, generation_claim, generation_finish, reply_compact, reply_written

pytestmark = pytest.mark.django_db

PROVIDER_ERROR = {"code": "provider_error", "detail": "The provider went away."}


def reply_running(thread: Thread) -> Generation:
    """Post a message and let a worker claim its reply, leaving it running."""
    posted = message_post(thread=thread, content="Hello", client_id=None)
    generation_claim(worker="test-worker", model="scripted")
    return Generation.objects.get(message=posted.reply)


def timeline_url(message: Message) -> str:
    return reverse("admin:threads_message_timeline", args=[message.pk])


def changelist_url(app_model: str) -> str:
    return reverse(f"admin:{app_model}_changelist")


def run_action(client, app_model: str, action: str, objects) -> object:
    selected = [str(obj.pk) for obj in objects]
    return client.post(changelist_url(app_model), {"action": action, "_selected_action": selected}, follow=True)


def flash_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


PAGES = {
    "thread list": lambda reply: changelist_url("threads_thread"),
    "thread": lambda reply: reverse("admin:threads_thread_change", args=[reply.thread_id]),
    "message list": lambda reply: changelist_url("threads_message"),
    "message": lambda reply: reverse("admin:threads_message_change", args=[reply.pk]),
    "timeline": timeline_url,
    "generation list": lambda reply: changelist_url("streaming_generation"),
    "generation": lambda reply: reverse("admin:streaming_generation_change", args=[reply.generation.pk]),
    "chunk list": lambda reply: changelist_url("streaming_chunk"),
    "chunk": lambda reply: reverse("admin:streaming_chunk_change", args=[reply.chunks.first().pk]),
}


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_for_staff(admin_client, thread, page):
    """Every admin page of threads and streams renders for staff."""
    reply = reply_written(thread)
    assert admin_client.get(PAGES[page](reply)).status_code == 200


@pytest.mark.parametrize("page", PAGES)
def test_page_sends_non_staff_to_login(client, user, thread, page):
    """A signed-in person who is not staff is sent to the admin login instead."""
    reply = reply_written(thread)
    client.force_login(user)
    url = PAGES[page](reply)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("model", ["threads_thread", "threads_message", "streaming_generation", "streaming_chunk"])
def test_admin_refuses_to_add_change_or_delete(admin_client, thread, model):
    """Even a superuser cannot add, edit or delete log rows through the admin."""
    reply = reply_written(thread)
    obj = {
        "threads_thread": thread,
        "threads_message": reply,
        "streaming_generation": reply.generation,
        "streaming_chunk": reply.chunks.first(),
    }[model]
    assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403
    assert admin_client.post(reverse(f"admin:{model}_change", args=[obj.pk]), {"text": "edited"}).status_code == 403
    assert admin_client.post(reverse(f"admin:{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_message_change_page_links_to_the_timeline(admin_client, thread):
    """The message page offers its stream timeline."""
    reply = reply_written(thread)
    response = admin_client.get(reverse("admin:threads_message_change", args=[reply.pk]))
    assert timeline_url(reply) in response.content.decode()


def test_message_list_links_to_each_timeline(admin_client, thread):
    """Each row of the message list links to that message's timeline."""
    reply = reply_written(thread)
    response = admin_client.get(changelist_url("threads_message"))
    assert timeline_url(reply) in response.content.decode()
    assert timeline_url(reply.reply_to) in response.content.decode()


def test_timeline_lists_the_message_chunks_in_seq_order(admin_client, thread):
    """The timeline shows the reply's start, deltas and end, in seq order, and no other message's chunks."""
    reply = reply_written(thread, deltas=("a", "b", "c"))
    response = admin_client.get(timeline_url(reply))
    rows = [(row.chunk.seq, row.chunk.kind, row.chunk.text) for row in response.context["rows"]]
    first = reply.seq
    assert rows == [
        (first, "start", ""),
        (first + 1, "delta", "a"),
        (first + 2, "delta", "b"),
        (first + 3, "delta", "c"),
        (first + 4, "end", ""),
    ]
    rendered = [int(seq) for seq in re.findall(r'data-seq="(\d+)"', response.content.decode())]
    assert rendered == [seq for seq, _, _ in rows]


@pytest.mark.parametrize("compacted", [False, True], ids=["one row per event", "deltas compacted"])
def test_timeline_shows_time_since_start_and_gap_since_previous_chunk(admin_client, thread, settings, compacted):
    """Each row carries its time since the message began and the gap since the event before, as a bar too."""
    settings.STREAM_COMPACT_REPLIES = False
    reply = reply_written(thread, deltas=("a", "b"))
    began = reply.created_at
    offsets_ms = [0, 100, 2100, 2600]  # start, a, b, end
    for chunk, offset in zip(reply.chunks.order_by("seq"), offsets_ms, strict=True):
        Chunk.objects.filter(pk=chunk.pk).update(created_at=began + timedelta(milliseconds=offset))
    if compacted:
        settings.STREAM_COMPACT_REPLIES = True
        assert reply_compact(message=reply) == 1  # "a" and "b" share one row, each keeping its time
    response = admin_client.get(timeline_url(reply))
    rows = response.context["rows"]
    assert [row.since_start_ms for row in rows] == pytest.approx(offsets_ms)
    assert [row.gap_ms for row in rows] == [None, pytest.approx(100), pytest.approx(2000), pytest.approx(500)]
    assert [row.bar_percent for row in rows] == [0, 5, 100, 25]
    assert "2000.0 ms" in response.content.decode()


def test_timeline_confirms_content_that_matches_its_log(admin_client, thread):
    """An untouched reply is shown as matching the text re-assembled from its deltas."""
    reply = reply_written(thread)
    response = admin_client.get(timeline_url(reply))
    check = response.context["check"]
    assert check.reassembled == reply.content == "Hello there"
    assert check.mismatch_at is None
    assert "Mismatch" not in response.content.decode()


def test_timeline_flags_content_changed_behind_the_log(admin_client, thread):
    """A reply whose content was changed behind its log is flagged, with the first differing character."""
    reply = reply_written(thread)
    Message.objects.filter(pk=reply.pk).update(content="Hallo there")
    response = admin_client.get(timeline_url(reply))
    assert response.context["check"].mismatch_at == 1
    content = response.content.decode()
    assert 'class="errornote" id="reply-check">Mismatch' in content
    assert "from character 1 on" in content


def test_timeline_of_a_pruned_reply_compares_nothing(admin_client, thread):
    """A reply whose log was pruned is not flagged as a mismatch: the log cannot tell."""
    reply = reply_written(thread)
    reply_written(thread)  # the thread's newest chunk, which purges keep, belongs to another reply
    run_action(admin_client, "threads_thread", "purge_chunk_log", [thread])
    response = admin_client.get(timeline_url(reply))
    assert response.context["check"] is None
    assert "retention pruned it" in response.content.decode()


def test_timeline_pages_a_long_reply_with_the_same_queries(
    admin_client, thread, django_assert_max_num_queries, django_assert_num_queries
):
    """A reply of hundreds of chunks shows one page of them, in as many queries as a short reply."""
    short = reply_written(thread, deltas=("a",))
    admin_client.get(timeline_url(short))  # the session's first request loads more
    with django_assert_max_num_queries(12) as short_queries:
        admin_client.get(timeline_url(short))
    long = reply_written(thread, deltas=tuple(f" w{index}" for index in range(TIMELINE_PAGE_SIZE + 20)))
    with django_assert_num_queries(len(short_queries)):
        response = admin_client.get(timeline_url(long))
    assert len(response.context["rows"]) == TIMELINE_PAGE_SIZE
    assert response.context["check"].mismatch_at is None
    last_page = admin_client.get(timeline_url(long) + "?page=2")
    assert [row.chunk.kind for row in last_page.context["rows"]][-1] == "end"


LIST_PAGES = ["threads_thread", "threads_message", "streaming_generation", "streaming_chunk"]


@pytest.mark.parametrize("model", LIST_PAGES)
def test_list_page_queries_do_not_grow_with_rows(
    admin_client, make_user, model, django_assert_max_num_queries, django_assert_num_queries
):
    """A list page runs as many queries for many owners, threads, messages and chunks as for one."""
    reply_written(thread_create(owner=make_user("owner")))
    admin_client.get(changelist_url(model))
    with django_assert_max_num_queries(12) as few:
        admin_client.get(changelist_url(model))
    for index in range(10):
        thread = thread_create(owner=make_user(f"owner{index}"))
        reply_written(thread, deltas=tuple("abcdefghij"))
        reply_written(thread, status="failed", error=PROVIDER_ERROR)
    with django_assert_num_queries(len(few)):
        response = admin_client.get(changelist_url(model))
    assert response.context["cl"].result_count > 10


def test_thread_page_queries_do_not_grow_with_messages(
    admin_client, thread, django_assert_max_num_queries, django_assert_num_queries
):
    """The thread page with its messages inline runs as many queries for many messages as for two."""
    url = reverse("admin:threads_thread_change", args=[thread.pk])
    reply_written(thread)
    admin_client.get(url)
    with django_assert_max_num_queries(12) as few:
        admin_client.get(url)
    for _ in range(10):
        reply_written(thread)
    with django_assert_num_queries(len(few)):
        admin_client.get(url)


def test_message_list_shows_each_reply_figures(admin_client, thread):
    """The message list shows tokens, time to first token, duration, speed and chunk count of a reply."""
    reply = reply_written(thread, deltas=("a", "b", "c", "d"))
    began = reply.created_at
    Message.objects.filter(pk=reply.pk).update(completed_at=began + timedelta(seconds=2.5))
    Generation.objects.filter(message=reply).update(first_token_at=began + timedelta(seconds=0.5))
    response = admin_client.get(changelist_url("threads_message") + "?role__exact=assistant")
    model_admin = response.context["cl"].model_admin
    (row,) = response.context["cl"].result_list
    assert (model_admin.tokens_in(row), model_admin.tokens_out(row)) == (12, 4)
    assert model_admin.time_to_first_token(row) == "0.50 s"
    assert model_admin.duration(row) == "2.50 s"
    assert model_admin.tokens_per_second(row) == "2.0"
    assert model_admin.chunk_count(row) == 3  # rows: start, one segment of the four deltas, end


def test_thread_list_counts_messages(admin_client, thread):
    """The thread list shows how many messages each thread holds."""
    reply_written(thread)
    reply_written(thread)
    response = admin_client.get(changelist_url("threads_thread"))
    (row,) = response.context["cl"].result_list
    assert row.message_count == 4


def test_thread_page_links_to_its_chunk_log(admin_client, thread, make_user):
    """The thread page links to the chunk list filtered to that thread's chunks."""
    reply = reply_written(thread)
    reply_written(thread_create(owner=make_user("bob")))
    page = admin_client.get(reverse("admin:threads_thread_change", args=[thread.pk])).content.decode()
    (link,) = re.findall(r'href="([^"]*streaming/chunk/\?[^"]*)"', page)
    response = admin_client.get(link.replace("&amp;", "&"))
    rows = response.context["cl"].result_list
    covered = [seq for chunk in rows for seq in range(chunk.seq, chunk.seq_last + 1)]
    assert covered == list(range(1, reply.content_seq + 1))
    assert {chunk.thread_id for chunk in rows} == {thread.pk}


def test_message_search_finds_a_message_by_id(admin_client, thread):
    """Pasting a message id into the search finds that message."""
    reply = reply_written(thread)
    reply_written(thread)
    response = admin_client.get(changelist_url("threads_message"), {"q": str(reply.pk)})
    assert list(response.context["cl"].result_list) == [reply]


def test_message_search_finds_messages_by_content(admin_client, thread):
    """A word searched for finds the messages whose content holds it."""
    reply = reply_written(thread, deltas=("Purple", " rain"))
    reply_written(thread)
    response = admin_client.get(changelist_url("threads_message"), {"q": "purple"})
    assert list(response.context["cl"].result_list) == [reply]


def test_stuck_filter_finds_running_generations_whose_lease_expired(admin_client, thread, make_user):
    """The lease filter's "stuck" choice lists running generations with an expired lease, and no others."""
    reply_running(thread_create(owner=make_user("bob")))  # running, lease held
    stuck = reply_running(thread)
    Generation.objects.filter(pk=stuck.pk).update(lease_expires_at=stuck.lease_expires_at - timedelta(hours=1))
    response = admin_client.get(changelist_url("streaming_generation"), {"lease": "stuck"})
    assert [generation.pk for generation in response.context["cl"].result_list] == [stuck.pk]
    assert "Stuck: lease expired (1)" in response.content.decode()


def test_cancel_action_asks_a_running_generation_to_stop(admin_client, thread):
    """Cancelling a running generation flags it for its worker, which ends the reply."""
    generation = reply_running(thread)
    response = run_action(admin_client, "streaming_generation", "cancel", [generation])
    generation.refresh_from_db()
    assert generation.cancel_requested
    assert flash_messages(response) == ["Asked 1 generation(s) to stop."]


def test_cancel_action_ends_a_queued_generation(admin_client, thread):
    """Cancelling a generation no worker holds ends its reply as cancelled at once."""
    posted = message_post(thread=thread, content="Hello", client_id=None)
    run_action(admin_client, "streaming_generation", "cancel", [posted.reply.generation])
    posted.reply.refresh_from_db()
    assert posted.reply.status == Message.Status.CANCELLED
    assert Generation.objects.get(message=posted.reply).status == Generation.Status.DONE


def test_retry_action_queues_a_new_reply_to_a_failed_one(admin_client, thread):
    """Retrying a failed reply queues a new reply to the same message; the failed one stays."""
    failed = reply_written(thread, deltas=("Par",), status="failed", error=PROVIDER_ERROR)
    response = run_action(admin_client, "threads_message", "retry", [failed])
    retry = Message.objects.get(thread=thread, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
    assert retry.reply_to_id == failed.reply_to_id
    assert retry.generation.status == Generation.Status.QUEUED
    assert Message.objects.get(pk=failed.pk).content == "Par"
    assert flash_messages(response) == ["Queued 1 new reply."]


def test_retry_action_refuses_a_complete_reply(admin_client, thread):
    """A complete reply is not retried, and the admin says why."""
    reply = reply_written(thread)
    response = run_action(admin_client, "threads_message", "retry", [reply])
    assert not Message.objects.filter(thread=thread, status=Message.Status.STREAMING).exists()
    assert "Only a failed or cancelled reply can be retried." in flash_messages(response)[-1]


def test_purge_action_empties_a_settled_thread_log_but_keeps_contents(admin_client, thread):
    """Purging a thread with no reply streaming deletes its chunks but the newest; every content stays."""
    replies = [reply_written(thread), reply_written(thread, deltas=("Bye",))]
    contents = dict(Message.objects.filter(thread=thread).values_list("pk", "content"))
    response = run_action(admin_client, "threads_thread", "purge_chunk_log", [thread])
    thread.refresh_from_db()
    assert list(Chunk.objects.filter(thread=thread).values_list("seq", flat=True)) == [thread.last_seq]
    assert dict(Message.objects.filter(thread=thread).values_list("pk", "content")) == contents
    assert contents[replies[1].pk] == "Bye"
    assert flash_messages(response) == [f"Deleted {replies[1].content_seq - 1} chunks; message contents are kept."]


def test_purge_action_refuses_a_thread_with_a_reply_streaming(admin_client, thread):
    """A thread whose reply is being written keeps its whole chunk log."""
    reply_written(thread)
    reply_running(thread)
    chunks_before = Chunk.objects.filter(thread=thread).count()
    response = run_action(admin_client, "threads_thread", "purge_chunk_log", [thread])
    assert Chunk.objects.filter(thread=thread).count() == chunks_before
    assert "Not purged, a reply is being written" in flash_messages(response)[-1]


def test_staff_without_change_permission_sees_no_actions(client, make_user, thread):
    """Staff who may only view messages can read the list but are offered no action."""
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
    reply_written(thread, status="failed", error=PROVIDER_ERROR)
    client.force_login(viewer)
    response = client.get(changelist_url("threads_message"))
    assert response.status_code == 200
    assert response.context["action_form"] is None


def test_generation_list_flags_only_stuck_generations(admin_client, thread, make_user):
    """The "stuck" column is empty for healthy generations and says "lease expired" for a stuck one."""
    healthy = reply_running(thread_create(owner=make_user("bob")))
    stuck = reply_running(thread)
    Generation.objects.filter(pk=stuck.pk).update(lease_expires_at=stuck.lease_expires_at - timedelta(hours=1))
    page = admin_client.get(changelist_url("streaming_generation")).content.decode()
    row = r'<a href="[^"]*/generation/([0-9a-f-]{36})/change/[^>]*>.*?<td class="field-stuck">(.*?)</td>'
    cells = dict(re.findall(row, page, re.S))
    assert cells[str(stuck.pk)].count("lease expired") == 1
    assert cells[str(healthy.pk)].strip() == ""
    assert "icon-no" not in page, "no red cross on a healthy generation, under any column"


def test_message_list_previews_text_and_counts_log_events_as_the_timeline_does(admin_client, thread, settings):
    """Each row previews the message's text; its "log events" agree with the timeline's count, compacted or not."""
    reply = reply_written(thread, deltas=("Purple", " rain", " falls"))
    response = admin_client.get(changelist_url("threads_message") + "?role__exact=assistant")
    model_admin = response.context["cl"].model_admin
    (row,) = response.context["cl"].result_list
    assert model_admin.preview(row) == "Purple rain falls"
    timeline = admin_client.get(timeline_url(reply))
    assert model_admin.event_count(row) == timeline.context["page"].paginator.count == 5  # start, 3 deltas, end
    assert model_admin.chunk_count(row) == 3
    assert "5 events in the log, stored in 3 rows" in timeline.content.decode()
    assert 'class="column-preview' in response.content.decode()


def reply_finish(text: str = "Another") -> None:
    """Write the queued reply with `text` and end it complete."""
    claim = generation_claim(worker="test-worker", model="scripted")
    generation_append(claim=claim, text=text, first=True)
    generation_finish(claim=claim, status="complete")


def message_rows(client, query: str = "?role__exact=assistant") -> tuple[object, list[Message]]:
    """Return the message list's admin and its rows for `query`."""
    changelist = client.get(changelist_url("threads_message") + query).context["cl"]
    return changelist.model_admin, list(changelist.result_list)


def test_message_list_counts_log_events_as_the_timeline_does_after_a_switch_back(admin_client, thread):
    """A `switch` back to a reply is a row the reply owns but not one of its events: the count stays the timeline's."""
    reply = reply_written(thread, deltas=("Purple", " rain", " falls"))
    reply_regenerate(thread=thread, reply=reply)
    reply_finish()
    version_switch(thread=thread, message=reply)
    model_admin, rows = message_rows(admin_client)
    (row,) = [row for row in rows if row.pk == reply.pk]
    timeline = admin_client.get(timeline_url(reply))
    assert model_admin.event_count(row) == timeline.context["page"].paginator.count == 5  # start, 3 deltas, end


def test_message_list_counts_the_events_of_a_reply_being_written(admin_client, thread):
    """A reply still being written counts every event logged so far, as its timeline does."""
    posted = message_post(thread=thread, content="Hello", client_id=None)
    claim = generation_claim(worker="test-worker", model="scripted")
    generation_append(claim=claim, text="Purple", first=True)
    generation_append(claim=claim, text=" rain", first=False)
    model_admin, (row,) = message_rows(admin_client)
    timeline = admin_client.get(timeline_url(posted.reply))
    assert model_admin.event_count(row) == timeline.context["page"].paginator.count == 3  # start, 2 deltas


def test_message_list_sorts_by_the_log_events_it_shows(admin_client, thread):
    """Sorting by "log events" orders replies by the counts shown, whatever switches back to them were logged."""
    first = reply_written(thread, deltas=("a", "b", "c"))  # 5 events
    again = reply_regenerate(thread=thread, reply=first)
    reply_finish()  # 3 events
    for version in (first, again, first):
        version_switch(thread=thread, message=version)  # two switch rows owned by `first`, one by `again`
    longer = reply_written(thread, deltas=("a", "b", "c", "d"))  # 6 events
    column = admin_client.get(changelist_url("threads_message")).context["cl"].list_display.index("event_count")
    model_admin, rows = message_rows(admin_client, f"?role__exact=assistant&o={column}")
    assert [(row.pk, model_admin.event_count(row)) for row in rows] == [(again.pk, 3), (first.pk, 5), (longer.pk, 6)]
