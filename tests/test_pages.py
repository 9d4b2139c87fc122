"""The server-rendered pages: accounts, thread list, thread page and their small endpoints."""

import re
import uuid
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from streaming.events import message_payloads
from streaming.selectors import message_page, thread_snapshot
from streaming.services.endings import generation_cancel
from threads import views
from threads.models import Message
from threads.services import message_post, thread_create
from threads.templatetags.chat import render_markdown

from .writes import generation_append, generation_claim, generation_finish

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
XSS_PAYLOADS = [
    "<img src=x onerror=window.__xss=1>",
    "<script>window.__xss=1</script>",
    "[x](javascript:window.__xss=1)",
    '<a href="javascript:window.__xss=1">x</a>',
    "[x](  JaVaScRiPt:window.__xss=1 )",
    "<svg onload=window.__xss=1>",
    "[x](data:text/html,<script>window.__xss=1</script>)",
]


def post(thread, content: str = "Hello there") -> Message:
    """Post a user message; its reply stays queued (no worker runs in these tests)."""
    return message_post(thread=thread, content=content, client_id=uuid.uuid4()).reply


def exchange(thread, content: str = "Hello there") -> Message:
    """Post a message and end its reply at once (cancelled before any worker took it)."""
    reply = post(thread, content)
    generation_cancel(thread=thread)
    return reply


def write_reply(text: str, *, status: str | None = None, error: dict | None = None):
    """Have a worker claim the queued reply and write `text`; end it with `status` if given."""
    claim = generation_claim(worker="test-worker", model="scripted")
    generation_append(claim=claim, text=text, first=True)
    if status:
        generation_finish(claim=claim, status=status, error=error)
    return claim


class ElementCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def executable_markup(html: str) -> list[str]:
    """Return what in `html` a browser could run: script-capable elements, handlers, script URLs."""
    collector = ElementCollector()
    collector.feed(html)
    found = []
    for tag, attrs in collector.elements:
        if tag in ("script", "img", "svg", "iframe", "object", "embed"):
            found.append(tag)
        found += [name for name in attrs if name.startswith("on")]
        found += [
            value
            for name, value in attrs.items()
            if name in ("href", "src") and re.match(r"\s*(javascript|data|vbscript):", value, re.I)
        ]
    return found


def signed_in(client, user):
    client.force_login(user)
    return client


def thread_page(client, thread) -> str:
    """Return the thread page's HTML up to the <template>s the page script clones messages from."""
    page = client.get(reverse("thread-detail", args=[thread.id])).content.decode()
    return page[: page.index("<template")]


# --- Accounts ---------------------------------------------------------------------


def test_sign_up_creates_the_account_and_signs_in(client):
    """Sign-up is one form: it creates the user and the next page is theirs."""
    response = client.post(
        reverse("signup"),
        {"username": "newcomer", "password1": "a-long-test-password", "password2": "a-long-test-password"},
    )
    assert response.status_code == 302 and response["Location"] == reverse("thread-list")
    assert get_user_model().objects.filter(username="newcomer").exists()
    assert client.get(reverse("thread-list")).status_code == 200


def test_sign_up_refuses_mismatched_passwords(client):
    """A sign-up with two different passwords shows the form again and creates nobody."""
    response = client.post(
        reverse("signup"),
        {"username": "newcomer", "password1": "a-long-test-password", "password2": "another-password"},
    )
    assert response.status_code == 200
    assert 'aria-invalid="true"' in response.content.decode()
    assert not get_user_model().objects.filter(username="newcomer").exists()


@pytest.mark.parametrize("next_url,expected", [("/threads/x/", "/threads/x/"), ("https://evil.example/", "/")])
def test_sign_up_follows_a_safe_next_only(client, next_url, expected):
    """After sign-up a local `next` is followed and a foreign one is not."""
    form = {"username": "newcomer", "password1": "a-long-test-password", "password2": "a-long-test-password"}
    assert client.post(reverse("signup"), form | {"next": next_url})["Location"] == expected


@pytest.mark.parametrize("name", ["thread-list", "thread-activity"])
def test_pages_require_sign_in(client, name):
    """Anonymous visitors are sent to sign in (pages) or refused (JSON)."""
    response = client.get(reverse(name))
    if name == "thread-list":
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    else:
        assert response.status_code == 401


def test_thread_page_requires_sign_in(client, thread):
    """The thread page redirects an anonymous visitor to sign in, then back."""
    url = reverse("thread-detail", args=[thread.id])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_sign_in_page_names_the_demo_user_in_debug(client, make_user, settings):
    """In debug, with the demo user created, the sign-in page says how to sign in; it links sign-up."""
    make_user("demo")
    settings.DEBUG = True
    page = client.get(reverse("login")).content.decode()
    assert "demo-password" in page and reverse("signup") in page
    settings.DEBUG = False
    assert "demo-password" not in client.get(reverse("login")).content.decode()


def test_sign_in_and_out(client, user):
    """The sign-in form signs in; sign-out (a POST) signs out."""
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-only"})
    assert response.status_code == 302 and response["Location"] == reverse("thread-list")
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("thread-list")).status_code == 302


# --- Thread list --------------------------------------------------------------------


def test_thread_list_shows_own_threads_with_replying_marker(client, user, make_user):
    """The list shows the user's threads, newest first, marking the one whose reply is being written."""
    quiet = thread_create(owner=user, title="Quiet thread")
    busy = thread_create(owner=user)
    post(busy, "A question being answered")
    thread_create(owner=make_user("bob"), title="Bob's secret")
    page = signed_in(client, user).get(reverse("thread-list")).content.decode()
    assert "Bob&#x27;s secret" not in page and "Bob's secret" not in page
    assert page.index("A question being answered") < page.index("Quiet thread")
    items = dict(re.findall(r'data-thread-id="([^"]+)"(.*?)</li>', page, re.S))
    assert "data-replying hidden" not in items[str(busy.id)]
    assert "data-replying hidden" in items[str(quiet.id)]


def test_thread_activity_reports_replying(client, user, thread):
    """The list's poll endpoint says which threads have a reply being written."""
    signed_in(client, user)
    assert client.get(reverse("thread-activity")).json()["threads"][0]["replying"] is False
    post(thread)
    listed = client.get(reverse("thread-activity")).json()["threads"]
    assert listed == [
        {
            "id": str(thread.id),
            "title": "Test thread",
            "url": reverse("thread-detail", args=[thread.id]),
            "updated_at": listed[0]["updated_at"],
            "replying": True,
            "shared": False,
        }
    ]


def test_new_chat_saves_nothing_until_the_first_message(client, user):
    """The list's New chat opens a draft page under a fresh id; no thread is saved by opening it."""
    page = signed_in(client, user).get(reverse("thread-list")).content.decode()
    assert f'href="{reverse("thread-new")}"' in page
    draft = client.get(reverse("thread-new")).content.decode()
    draft_id = re.search(r'<main id="main" class="thread" data-thread-id="([0-9a-f-]{36})"', draft)[1]
    assert "data-draft" in draft and f'action="{reverse("thread-start", args=[draft_id])}"' in draft
    assert client.post(reverse("thread-list")).status_code == 405
    assert not user.threads.exists()


# --- Thread page ----------------------------------------------------------------------


def test_thread_page_renders_messages_partial_reply_and_seq(client, user, thread):
    """The page carries the thread id, the seq it reflects and each message with its hooks."""
    reply = post(thread, "What is **markdown**?")
    write_reply("It is *light* markup")
    thread.refresh_from_db()
    page = signed_in(client, user).get(reverse("thread-detail", args=[thread.id])).content.decode()
    assert f'data-thread-id="{thread.id}" data-seq="{thread.last_seq}"' in page
    assert re.search(r'data-role="user" data-status="complete"', page)
    assert f'data-message-id="{reply.id}" data-role="assistant" data-status="streaming"' in page
    assert "What is <strong>markdown</strong>?" in page
    assert "It is <em>light</em> markup" in page
    # The raw text so far, for the client to append deltas to.
    assert 'data-content="It is *light* markup"' in page
    assert re.search(r'<form class="composer"[^>]*>.*?<textarea[^>]*name="content"', page, re.S)


def test_thread_page_of_another_user_is_not_found(client, thread, make_user):
    """A second user gets 404 for the thread page and every endpoint of it (I11)."""
    reply = exchange(thread)
    signed_in(client, make_user("bob"))
    assert client.get(reverse("thread-detail", args=[thread.id])).status_code == 404
    assert client.get(reverse("thread-earlier", args=[thread.id]), {"before": reply.id}).status_code == 404
    assert client.post(reverse("thread-rename", args=[thread.id]), {"title": "Mine"}).status_code == 404
    assert client.post(reverse("reply-retry", args=[thread.id, reply.id])).status_code == 404
    thread.refresh_from_db()
    assert thread.title == "Test thread" and Message.objects.count() == 2


def test_thread_page_renders_payloads_as_text(client, user, thread):
    """An XSS payload in a user message reaches the page escaped, never as markup."""
    for payload in XSS_PAYLOADS[:3]:
        exchange(thread, payload)
    page = thread_page(signed_in(client, user), thread)
    bodies = re.findall(r"<div class=\"message__body prose\" data-body>(.*?)</div>", page, re.S)
    assert len(bodies) == 6
    assert executable_markup("".join(bodies)) == []
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in bodies[0]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_markdown_filter_strips_scripts_handlers_and_javascript_urls(payload):
    """Nothing executable survives rendering: no script, no event handler, no javascript: URL."""
    assert executable_markup(render_markdown(payload)) == []


def test_executable_markup_detects_what_it_should():
    """The checker above finds a handler, a script and a javascript: link (so its silence means something)."""
    html = '<p onclick="x()"></p><script></script><a href=" javascript:x()">x</a>'
    assert executable_markup(html) == ["onclick", "script", " javascript:x()"]


def test_markdown_filter_renders_markdown():
    """Markdown still renders: emphasis, code, lists and links that open safely in a new tab."""
    html = render_markdown("**bold** `code`\n\n- one\n- two\n\n[docs](https://example.com)")
    assert "<strong>bold</strong> <code>code</code>" in html
    assert "<ul>\n<li>one</li>" in html
    assert '<a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">docs</a>' in html


def test_failed_reply_shows_its_error_and_retry(client, user, thread):
    """A failed reply is rendered with its error and a Retry form posting to the retry endpoint."""
    reply = post(thread)
    write_reply(
        "Half an ans", status="failed", error={"code": "provider_error", "detail": "The provider is overloaded."}
    )
    page = signed_in(client, user).get(reverse("thread-detail", args=[thread.id])).content.decode()
    assert f'data-message-id="{reply.id}" data-role="assistant" data-status="failed"' in page
    assert "The provider is overloaded." in page
    assert f'action="{reverse("reply-retry", args=[thread.id, reply.id])}"' in page


# --- Earlier messages -----------------------------------------------------------------


def test_message_page_returns_the_newest_older_ones_oldest_first(thread):
    """The selector pages backwards: the `limit` messages just before a seq, in thread order."""
    for index in range(3):
        exchange(thread, f"Question {index}")
    messages = list(thread.messages.all())
    page = message_page(thread=thread, before=messages[4].seq, limit=3)
    assert [message.id for message in page.messages] == [message.id for message in messages[1:4]]
    assert page.next == messages[1].seq, "one older message is left"


def test_snapshot_gives_streaming_reply_texts_without_changing_the_messages(thread):
    """A streaming reply has its text at the snapshot's seq beside it; the message keeps its stored content."""
    reply = post(thread, "Question")
    write_reply("Half an ans")
    snapshot = thread_snapshot(thread=thread)
    streaming = next(message for message in snapshot.messages if message.id == reply.id)
    assert snapshot.reply_texts == {reply.id: "Half an ans"}
    assert streaming.content == "" and streaming.status == Message.Status.STREAMING
    assert [payload["content"] for payload in message_payloads(snapshot)] == ["Question", "Half an ans"]


def test_earlier_messages_page_in_until_the_first(client, user, thread, monkeypatch):
    """The page shows the newest messages; the earlier endpoint pages older ones in, then says it is done."""
    monkeypatch.setattr(views, "THREAD_PAGE_MESSAGES", 4)
    for index in range(5):
        exchange(thread, f"Question {index}")
    ids = [str(message.id) for message in thread.messages.all()]
    page = thread_page(signed_in(client, user), thread)
    assert re.findall(r'<li class="message[^>]*data-message-id="([^"]+)"', page) == ids[6:]
    assert "data-earlier " in page

    url = reverse("thread-earlier", args=[thread.id])
    first = client.get(url, {"before": ids[6]}, **JSON).json()
    assert re.findall(r'data-message-id="([^"]+)"', first["html"]) == ids[2:6] and first["has_more"] is True
    last = client.get(url, {"before": ids[2]}, **JSON).json()
    assert re.findall(r'data-message-id="([^"]+)"', last["html"]) == ids[:2] and last["has_more"] is False


def test_short_thread_has_no_earlier_control(client, user, thread):
    """A thread that fits on the page offers no "earlier messages" control."""
    exchange(thread)
    page = signed_in(client, user).get(reverse("thread-detail", args=[thread.id])).content.decode()
    assert "data-earlier " not in page


def test_earlier_with_unknown_cursor_is_not_found(client, user, thread):
    """A cursor that is not a message of this thread answers 404."""
    response = signed_in(client, user).get(reverse("thread-earlier", args=[thread.id]), {"before": uuid.uuid4()})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- Title --------------------------------------------------------------------------------


def test_title_edit(client, user, thread):
    """Renaming answers the new title to the page script and stores it."""
    response = signed_in(client, user).post(
        reverse("thread-rename", args=[thread.id]), {"title": "  Trip plans  "}, **JSON
    )
    assert response.status_code == 200 and response.json() == {"title": "Trip plans"}
    thread.refresh_from_db()
    assert thread.title == "Trip plans"


def test_title_edit_refuses_a_blank_title(client, user, thread):
    """A blank title is refused and the old one kept."""
    response = signed_in(client, user).post(reverse("thread-rename", args=[thread.id]), {"title": "   "}, **JSON)
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    thread.refresh_from_db()
    assert thread.title == "Test thread"


def test_title_edit_without_javascript_redirects_back(client, user, thread):
    """The rename form works as a plain form post too: it redirects to the thread."""
    response = signed_in(client, user).post(reverse("thread-rename", args=[thread.id]), {"title": "Plain"})
    assert response.status_code == 302 and response["Location"] == reverse("thread-detail", args=[thread.id])
    thread.refresh_from_db()
    assert thread.title == "Plain"


# --- Retry ----------------------------------------------------------------------------------


def test_retry_queues_a_new_reply_to_the_same_question(client, user, thread):
    """Retrying a cancelled reply starts a new one answering the same user message."""
    cancelled = exchange(thread)
    response = signed_in(client, user).post(reverse("reply-retry", args=[thread.id, cancelled.id]), **JSON)
    assert response.status_code == 202
    retry = Message.objects.get(pk=response.json()["reply"]["id"])
    assert retry.status == "streaming" and retry.reply_to_id == cancelled.reply_to_id


def test_retry_while_a_reply_runs_is_busy(client, user, thread):
    """A retry while another reply is being written is refused with `busy` and writes nothing."""
    cancelled = exchange(thread)
    signed_in(client, user).post(reverse("reply-retry", args=[thread.id, cancelled.id]), **JSON)
    response = client.post(reverse("reply-retry", args=[thread.id, cancelled.id]), **JSON)
    assert response.status_code == 409 and response.json()["error"]["code"] == "busy"
    assert thread.messages.count() == 3


def test_retry_of_a_complete_reply_is_refused(client, user, thread):
    """Only failed or cancelled replies can be retried; a plain form post gets the reason as a notice."""
    post(thread)
    claim = write_reply("Done.", status="complete")
    response = signed_in(client, user).post(reverse("reply-retry", args=[thread.id, claim.message_id]), follow=True)
    assert "Only a failed or cancelled reply can be retried." in response.content.decode()
    assert thread.messages.count() == 2
