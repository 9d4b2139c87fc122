"""The chat pages' own endpoints: new chats saved on their first message, archive, delete, sidebar and search."""

import re
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from django.urls import reverse

from streaming.models import Generation
from streaming.services.endings import generation_cancel
from threads.models import Message, Thread
from threads.selectors import thread_groups_by_date
from threads.services import message_post, thread_archive, thread_create, title_from_content

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


def start(client, thread_id, content: str = "Hello there", client_id=None, **extra):
    fields = {"content": content} | ({"client_id": str(client_id)} if client_id else {})
    return client.post(reverse("thread-start", args=[thread_id]), fields, **extra)


@pytest.fixture
def alice_client(client, user):
    client.force_login(user)
    return client


# --- A new chat is saved with its first message --------------------------------------


def test_start_saves_the_thread_with_its_first_message(alice_client, user):
    """The first message of a draft saves the thread under its id, titled, with the message and a queued reply."""
    thread_id, client_id = uuid.uuid4(), uuid.uuid4()
    response = start(alice_client, thread_id, "# Trip *plans*\nfor May", client_id, **JSON)
    assert response.status_code == 202
    body = response.json()
    thread = Thread.objects.get(pk=thread_id, owner=user)
    assert body["thread"] == {
        "id": str(thread_id),
        "title": "Trip plans",
        "url": reverse("thread-detail", args=[thread_id]),
    }
    assert body["message"]["client_id"] == str(client_id) and body["reply"]["status"] == "streaming"
    assert [message.role for message in thread.messages.all()] == ["user", "assistant"]


def test_start_repeated_with_the_same_client_id_writes_nothing_more(alice_client):
    """A start sent twice (a retried request) answers the first message and adds nothing (I7)."""
    thread_id, client_id = uuid.uuid4(), uuid.uuid4()
    first = start(alice_client, thread_id, "Once", client_id, **JSON).json()
    again = start(alice_client, thread_id, "Once", client_id, **JSON).json()
    assert again["message"]["id"] == first["message"]["id"] and Message.objects.count() == 2


def test_start_without_javascript_redirects_to_the_thread(alice_client):
    """The composer of a draft works as a plain form post: it saves the thread and opens its page."""
    thread_id = uuid.uuid4()
    response = start(alice_client, thread_id)
    assert response.status_code == 302 and response["Location"] == reverse("thread-detail", args=[thread_id])


@pytest.mark.parametrize("content,code,status", [("x" * 32_001, "too_long", 413), ("   ", "bad_request", 400)])
def test_refused_start_leaves_no_thread(alice_client, content, code, status):
    """A first message refused (too long, blank) answers the server's error and saves no empty thread."""
    response = start(alice_client, uuid.uuid4(), content, **JSON)
    assert response.status_code == status and response.json()["error"]["code"] == code
    if code == "too_long":
        assert response.json()["error"]["detail"] == "A message may be at most 32000 characters long."
    assert not Thread.objects.exists()


def test_rate_limited_start_leaves_no_thread(alice_client, settings):
    """A first message past the send limit is refused with rate_limited and Retry-After, and saves no thread."""
    settings.CHAT_SENDS_PER_MINUTE = 1
    assert start(alice_client, uuid.uuid4(), **JSON).status_code == 202
    response = start(alice_client, uuid.uuid4(), **JSON)
    assert response.status_code == 429 and response["Retry-After"]
    assert Thread.objects.count() == 1


def test_start_on_another_persons_thread_is_not_found(alice_client, make_user):
    """A draft id that is someone else's thread answers not_found and writes nothing (I11)."""
    bobs = thread_create(owner=make_user("bob"), title="Bob's")
    response = start(alice_client, bobs.id, **JSON)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert not Message.objects.exists()


def test_opening_new_chat_twice_saves_nothing(alice_client, user):
    """Each New chat is a draft with its own id, and none is saved until a message is sent."""
    ids = {
        re.search(r'class="thread" data-thread-id="([^"]+)"', alice_client.get(reverse("thread-new")).content.decode())[
            1
        ]
        for _ in range(2)
    }
    assert len(ids) == 2 and not user.threads.exists()


# --- Archive and delete ------------------------------------------------------------------


def test_archive_moves_a_thread_from_the_list_to_the_archived_view(alice_client, user):
    """An archived thread leaves the list, the activity poll and the sidebar, and shows in the archived view."""
    kept, archived = thread_create(owner=user, title="Kept"), thread_create(owner=user, title="Put away")
    response = alice_client.post(reverse("thread-archive", args=[archived.id]), **JSON)
    assert response.json() == {"id": str(archived.id), "archived": True}
    listing = alice_client.get(reverse("thread-list")).content.decode()
    assert "Kept" in listing and "Put away" not in listing
    assert [t["id"] for t in alice_client.get(reverse("thread-activity")).json()["threads"]] == [str(kept.id)]
    assert "Put away" not in alice_client.get(reverse("thread-sidebar")).json()["html"]
    archived_page = alice_client.get(reverse("thread-archived")).content.decode()
    assert "Put away" in archived_page and "Kept" not in archived_page and "Unarchive" in archived_page


def test_unarchive_puts_it_back_without_moving_it(alice_client, user):
    """Unarchiving returns the thread to the list in its old place; neither step counts as activity."""
    thread = thread_create(owner=user, title="Back again")
    updated_at = Thread.objects.get(pk=thread.pk).updated_at
    alice_client.post(reverse("thread-archive", args=[thread.id]))
    response = alice_client.post(reverse("thread-archive", args=[thread.id]), {"archived": "0", "next": "/archived/"})
    assert response.status_code == 302 and response["Location"] == "/archived/"
    thread.refresh_from_db()
    assert thread.archived_at is None and thread.updated_at == updated_at
    assert "Back again" in alice_client.get(reverse("thread-list")).content.decode()


def test_archived_thread_page_says_so_and_still_works(alice_client, user):
    """An archived thread still opens, with a notice and an Unarchive button."""
    thread = thread_archive(thread=thread_create(owner=user, title="Old"))
    page = alice_client.get(reverse("thread-detail", args=[thread.id])).content.decode()
    assert "This chat is archived" in page and "Unarchive" in page


def test_archive_refuses_a_foreign_next(alice_client, user):
    """After archiving, only a local `next` is followed."""
    thread = thread_create(owner=user, title="T")
    response = alice_client.post(reverse("thread-archive", args=[thread.id]), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("thread-list")


def test_delete_asks_first_then_deletes(alice_client, user):
    """GET shows a confirmation and deletes nothing; POST deletes the thread with its messages and generations."""
    thread = thread_create(owner=user, title="Doomed")
    message_post(thread=thread, content="Hi", client_id=None)
    confirm = alice_client.get(reverse("thread-delete", args=[thread.id]))
    assert confirm.status_code == 200 and "Delete thread?" in confirm.content.decode()
    assert Thread.objects.filter(pk=thread.pk).exists()
    response = alice_client.post(reverse("thread-delete", args=[thread.id]), **JSON)
    assert response.json() == {"id": str(thread.id), "deleted": True}
    assert not Thread.objects.exists() and not Message.objects.exists() and not Generation.objects.exists()


def test_delete_without_javascript_goes_back_to_the_list(alice_client, user):
    thread = thread_create(owner=user, title="Doomed")
    response = alice_client.post(reverse("thread-delete", args=[thread.id]), follow=True)
    assert response.redirect_chain == [(reverse("thread-list"), 302)]
    assert "Chat deleted." in response.content.decode()


# --- Sidebar, search and grouping --------------------------------------------------------


def test_thread_page_sidebar_lists_threads_and_marks_the_current_one(alice_client, user, make_user):
    """The thread page's sidebar lists the person's threads (not others'), the open one marked current."""
    other = thread_create(owner=user, title="Other chat")
    current = thread_create(owner=user, title="Current chat")
    thread_create(owner=make_user("bob"), title="Bob's chat")
    page = alice_client.get(reverse("thread-detail", args=[current.id])).content.decode()
    sidebar = page[page.index('<aside class="sidebar"') : page.index("</aside>")]
    assert f'data-sidebar-thread="{current.id}" aria-current="page"' in sidebar
    assert f'data-sidebar-thread="{other.id}">' in sidebar
    assert "Bob" not in sidebar and "Today" in sidebar
    assert reverse("thread-new") in sidebar


def test_search_finds_titles_and_message_text(alice_client, user):
    """Search (list page, sidebar, poll) matches titles and the text of any message, ignoring case."""
    by_title = thread_create(owner=user, title="Lisbon trip")
    by_text = thread_create(owner=user, title="Untitled")
    message_post(thread=by_text, content="What about LISBON in May?", client_id=None)
    generation_cancel(thread=by_text)
    thread_create(owner=user, title="Recipes")
    listing = alice_client.get(reverse("thread-list"), {"q": "lisbon"}).content.decode()
    assert re.findall(r'data-thread-id="([^"]+)"', listing) == [str(by_text.id), str(by_title.id)]
    html = alice_client.get(reverse("thread-sidebar"), {"q": "lisbon", "current": str(by_title.id)}).json()["html"]
    assert "Lisbon trip" in html and "Untitled" in html and "Recipes" not in html
    assert f'data-sidebar-thread="{by_title.id}" aria-current="page"' in html
    polled = alice_client.get(reverse("thread-activity"), {"q": "lisbon"}).json()["threads"]
    assert {t["id"] for t in polled} == {str(by_title.id), str(by_text.id)}
    nothing = alice_client.get(reverse("thread-sidebar"), {"q": "zanzibar"}).json()["html"]
    assert "No chats match “zanzibar”" in nothing


@pytest.mark.parametrize("name", ["thread-list", "thread-sidebar", "thread-activity"])
def test_search_for_a_nul_is_answered(alice_client, user, name):
    """A search holding NUL (which no database text can hold) is answered, not a server error."""
    thread_create(owner=user, title="Lisbon")
    assert alice_client.get(reverse(name), {"q": "Lis\x00bon"}).status_code == 200


def test_threads_group_by_date():
    """Threads group as Today, Yesterday, Previous 7 days, Previous 30 days, then month (and year, if not this one)."""
    today = date(2026, 12, 3)
    ages = [0, 1, 2, 7, 8, 30, 31, 40, 400]
    threads = [
        Thread(title=f"{age} days", updated_at=datetime(2026, 12, 3, 12, tzinfo=timezone.utc) - timedelta(days=age))
        for age in ages
    ]
    groups = thread_groups_by_date(threads=threads, today=today)
    assert [(group.label, [t.title for t in group.threads]) for group in groups] == [
        ("Today", ["0 days"]),
        ("Yesterday", ["1 days"]),
        ("Previous 7 days", ["2 days", "7 days"]),
        ("Previous 30 days", ["8 days", "30 days"]),
        ("November", ["31 days"]),
        ("October", ["40 days"]),
        ("October 2025", ["400 days"]),
    ]


# --- Titles, message actions, the composer's limit -------------------------------------------


@pytest.mark.parametrize(
    "content,title",
    [
        ("# Heading one", "Heading one"),
        ("## **Bold** _plans_ for `code`", "Bold plans for code"),
        ("[the docs](https://example.com) say", "the docs say"),
        ("- first item\n- second", "first item"),
        ("1. Step one", "Step one"),
        ("> quoted words", "quoted words"),
        ("```python\nprint('hi')\n```", "print('hi')"),
        ("Plain words\nsecond line", "Plain words"),
        ("***", "***"),
        ("<b>raw</b> HTML stays text", "<b>raw</b> HTML stays text"),
    ],
)
def test_title_from_markdown(content, title):
    """A thread's title is the first line of its first message as a reader sees it: no Markdown marks."""
    assert title_from_content(content) == title


def test_long_title_is_cut_with_an_ellipsis():
    """A long first line is cut at 60 characters, the cut marked, after the Markdown is gone."""
    words = ("word " * 30).strip()
    assert title_from_content(f"**{words}**") == words[:59].rstrip() + "…"


def test_messages_carry_copy_source_and_timestamps(alice_client, user, thread):
    """Each message carries its Markdown (what Copy copies), a Copy button, and its time with the exact one as title."""
    message_post(thread=thread, content="Some **bold** words", client_id=None)
    generation_cancel(thread=thread)
    page = alice_client.get(reverse("thread-detail", args=[thread.id])).content.decode()
    page = page[: page.index("<template")]
    assert 'data-content="Some **bold** words"' in page
    assert page.count('data-copy aria-label="Copy"') == 2
    created = thread.messages.first().created_at
    times = re.findall(r'<time class="message__time" data-time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>', page)
    assert len(times) == 2
    assert times[0][0] == created.isoformat() and times[0][1].endswith("UTC") and times[0][2] == "just now"


def test_composer_shows_the_limit_instead_of_cutting(alice_client, thread):
    """The composer has no maxlength (which cuts a paste silently); it carries the limit and the server's refusal."""
    page = alice_client.get(reverse("thread-detail", args=[thread.id])).content.decode()
    textarea = re.search(r"<textarea[^>]*>", page)[0]
    assert "maxlength" not in textarea
    assert 'data-max-chars="32000"' in textarea
    assert 'data-too-long="A message may be at most 32000 characters long."' in textarea
