"""Prompt content is data: HTML, Markdown links, script URLs and template syntax in messages render inert everywhere.

A user message and a model reply carry the payloads; the thread page (finished and mid-reply),
the thread list, the earlier-messages fragment and the admin (message list, change page,
timeline, thread page, chunk list) must show them as text: no element, attribute or URL
from them can run, and Django's template syntax in them is never evaluated.
"""

import json
import re
from html.parser import HTMLParser

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from threads.models import Message, Thread
from threads.services import message_post, thread_create

from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture
from .writes import generation_append, generation_claim, generation_finish

pytestmark = pytest.mark.django_db

# The first line becomes the thread's title (and the start of the admin's excerpts).
PAYLOAD = """{{ request }} {% debug %} <script>alert(1)</script><img src=x onerror=alert(1)>
<a href="javascript:alert(1)" onclick="alert(1)">html link</a> <iframe src="javascript:alert(1)"></iframe>
[md link](javascript:alert(1)) [upper](JAVASCRIPT:alert(1)) [spaced](  javascript:alert(1))
[entity](jav&#x61;script:alert(1)) [data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)
[vb](vbscript:msgbox(1)) <javascript:alert(1)> ![image](javascript:alert(1)) <svg onload=alert(1)>
{{ settings.SECRET_KEY }} {% load static %}{% static 'x' %} {% include "base.html" %}
"""
REPLY_DELTAS = ("You wrote <b onmouseover=alert(1)>bold</b> ", "and {{ request.user }} ", "[x](javascript:alert(1))")
SCRIPT_URL = re.compile(r"^\s*(javascript:|vbscript:|data:text/html)", re.IGNORECASE)
TEMPLATE_SYNTAX = ["{{ request }}", "{% debug %}", "{{ settings.SECRET_KEY }}", '{% include "base.html" %}']
# What the template syntax would have rendered, had it been evaluated.
EVALUATED = ["WSGIRequest", "ASGIRequest", "sql_queries", "test-only-secret-key", "/static/x"]


class PageParts(HTMLParser):
    """Collect a page's elements (with their attributes), its text and its inline scripts, as a browser parses them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.inline_scripts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.inline_scripts.append(data)
        else:
            self.text.append(data)

    def executable(self) -> list[str]:
        """Return what on the page could run: event handlers, script URLs, frames, inline or foreign scripts.

        The pages' own icons (inline SVG, a data: favicon, admin images) are same-origin and run nothing.
        """
        found = [f"inline script {code[:40]!r}" for code in self.inline_scripts]
        for tag, attrs in self.elements:
            found += [f"<{tag} {name}>" for name in attrs if name.startswith("on")]
            found += [f"<{tag} {name}={value}>" for name, value in attrs.items() if SCRIPT_URL.match(value)]
            if tag in ("iframe", "object", "embed", "frame"):
                found.append(f"<{tag}>")
            if tag in ("script", "img") and not attrs.get("src", "/").startswith(("/", "data:image/")):
                found.append(f"<{tag} src={attrs['src']}>")
        return found


def reply_with(thread: Thread, deltas: tuple[str, ...], *, finished: bool = True) -> Message:
    """Write a reply from `deltas` with the worker's own services, finished or still being written."""
    claim = generation_claim(worker="test-worker", model="scripted")
    for index, text in enumerate(deltas):
        generation_append(claim=claim, text=text, first=index == 0)
    if finished:
        generation_finish(claim=claim, status="complete", usage={"input_tokens": 1, "output_tokens": 3}, error=None)
    return Message.objects.get(pk=claim.message_id)


@pytest.fixture
def conversation(user) -> tuple[Thread, Message, Message]:
    """A thread whose user message is the payload and whose reply is made of payload deltas."""
    thread = thread_create(owner=user)
    posted = message_post(thread=thread, content=PAYLOAD, client_id=None)
    return Thread.objects.get(pk=thread.pk), posted.message, reply_with(thread, REPLY_DELTAS)


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def assert_inert(html: str, *, shows: list[str]) -> None:
    """Nothing in the page can run, template syntax stayed text, and each of `shows` is there as text."""
    page = PageParts(html)
    assert page.executable() == []
    text = "".join(page.text)
    for literal in shows:
        assert literal in text, f"{literal!r} is not shown as text"
    for rendered in EVALUATED:
        assert rendered not in html, f"template syntax was evaluated: {rendered!r}"


def test_thread_page_shows_payloads_as_text(client, user, conversation):
    """The thread page renders the message and the reply as text and safe Markdown: nothing runs."""
    thread, _, _ = conversation
    client.force_login(user)
    html = client.get(f"/threads/{thread.id}/").content.decode()
    assert_inert(html, shows=["<script>alert(1)</script>", "<b onmouseover=alert(1)>bold</b>", *TEMPLATE_SYNTAX])


def test_thread_page_mid_reply_shows_payloads_as_text(client, user):
    """A reply still being written, carried whole in an attribute for the page script, renders inert too."""
    thread = thread_create(owner=user)
    message_post(thread=thread, content="Hi", client_id=None)
    reply_with(thread, REPLY_DELTAS, finished=False)
    client.force_login(user)
    html = client.get(f"/threads/{thread.id}/").content.decode()
    streaming = [attrs for tag, attrs in PageParts(html).elements if attrs.get("data-status") == "streaming"]
    assert streaming[0]["data-content"] == "".join(REPLY_DELTAS)
    assert_inert(html, shows=["{{ request.user }}"])


def test_thread_list_shows_a_payload_title_as_text(client, user, conversation):
    """The thread list shows a title made of the payload's first line as text."""
    client.force_login(user)
    html = client.get("/").content.decode()
    assert_inert(html, shows=["<script>alert(1)</script>", "{{ request }}"])


def test_earlier_messages_fragment_shows_payloads_as_text(client, user, conversation):
    """The earlier-messages fragment the page script inserts renders the payload inert."""
    thread, message, reply = conversation
    client.force_login(user)
    html = client.get(f"/threads/{thread.id}/earlier", {"before": str(reply.id)}).json()["html"]
    assert message.content and "data-message-id" in html
    assert_inert(html, shows=["<script>alert(1)</script>", *TEMPLATE_SYNTAX])


ADMIN_PAGES = {
    "message list": lambda thread, reply: reverse("admin:threads_message_changelist"),
    "user message": lambda thread, reply: reverse("admin:threads_message_change", args=[reply.reply_to_id]),
    "reply": lambda thread, reply: reverse("admin:threads_message_change", args=[reply.id]),
    "timeline": lambda thread, reply: reverse("admin:threads_message_timeline", args=[reply.id]),
    "user message timeline": lambda thread, reply: reverse("admin:threads_message_timeline", args=[reply.reply_to_id]),
    "thread": lambda thread, reply: reverse("admin:threads_thread_change", args=[thread.id]),
    "thread list": lambda thread, reply: reverse("admin:threads_thread_changelist"),
    "chunk list": lambda thread, reply: reverse("admin:streaming_chunk_changelist"),
}


@pytest.mark.parametrize("page", list(ADMIN_PAGES))
def test_admin_page_shows_payloads_as_text(staff_client, conversation, page):
    """Each admin page that shows what people and models wrote shows it as text."""
    thread, _, reply = conversation
    response = staff_client.get(ADMIN_PAGES[page](thread, reply))
    assert response.status_code == 200
    shows = "{{ request.user }}" if page == "reply" else "<script>alert(1)</script>"
    assert_inert(response.content.decode(), shows=[shows])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path", ["/api/threads/{thread}/events", "/api/chat/stream?id={thread}", "/api/chat/resume/{reply}"]
)
async def test_event_streams_carry_the_security_headers(user, session_cookie, path):
    """Event streams carry the CSP and nosniff like every answer: their data is never taken for a page."""
    thread = await database_sync_to_async(thread_create)(owner=user)
    posted = await database_sync_to_async(message_post)(thread=thread, content="Hi", client_id=None)
    cookie = await database_sync_to_async(session_cookie)(user)
    stream = HttpStream(path.format(thread=thread.id, reply=posted.reply.id), headers={"cookie": cookie})
    status, headers = await stream.start()
    await stream.close()
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert "script-src 'self';" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_api_returns_payloads_unchanged(client, user, conversation):
    """The JSON API returns the payload as the exact text stored: it is data, escaped by JSON, not rewritten."""
    thread, message, reply = conversation
    client.force_login(user)
    response = client.get(f"/api/threads/{thread.id}")
    assert response["Content-Type"] == "application/json"
    contents = [item["content"] for item in json.loads(response.content)["messages"]]
    assert contents == [PAYLOAD, "".join(REPLY_DELTAS)] == [message.content, reply.content]
