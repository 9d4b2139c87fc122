"""Versions in the thread page, in Chromium: regenerate a reply, edit a question, and switch between versions.

Every tab follows the active path live; a reload renders the same path from the server.
"""

import pytest
from playwright.sync_api import Page, expect

from .live_server import chat_server  # noqa: F401 - a fixture
from .test_browser import (  # noqa: F401 - browser, sessions and open_context are fixtures
    DESKTOP,
    PHONE,
    REPLY_TIMEOUT_MS,
    api_post,
    browser,
    expect_reply_status,
    new_thread,
    open_context,
    open_thread,
    screenshot,
    send,
    sessions,
    stored,
)

pytestmark = pytest.mark.browser

SHOWN = "[data-messages] > [data-message-id]:not([hidden])"


def shown_ids(page: Page) -> list[str]:
    return page.locator(SHOWN).evaluate_all("(items) => items.map((item) => item.dataset.messageId)")


def stored_path(page: Page) -> list[str]:
    """The active path as the server keeps it."""
    return [message["id"] for message in stored(page)["messages"] if message["on_path"]]


def expect_path_matches_store(page: Page) -> None:
    """The page shows exactly the stored active path, each version with its stored text."""
    path = stored_path(page)
    expect(page.locator(SHOWN)).to_have_count(len(path))
    assert shown_ids(page) == path


def shown_reply(page: Page):
    return page.locator(f"{SHOWN}[data-role=assistant]").last


def versions_label(item) -> str:
    return item.locator("[data-version-label]").inner_text()


def test_regenerate_edit_and_switch_in_two_tabs(open_context):
    """Regenerate keeps the first reply as version 1; an edit branches; both tabs and a reload follow the path."""
    context = open_context()
    first = new_thread(context)
    second = open_thread(context, first.url)
    send(first, "Tell me about tables")
    expect_reply_status(first, "complete")

    shown_reply(first).hover()
    shown_reply(first).get_by_role("button", name="Regenerate").click()
    for page in (first, second):
        expect(page.locator("[data-role=assistant]")).to_have_count(2)
        expect(shown_reply(page)).to_have_attribute("data-status", "complete", timeout=REPLY_TIMEOUT_MS)
        expect(shown_reply(page).locator("[data-versions]")).to_be_visible()
        assert versions_label(shown_reply(page)) == "2 / 2"
        expect_path_matches_store(page)

    shown_reply(second).get_by_role("button", name="Previous version").click()
    for page in (first, second):
        expect(shown_reply(page).locator("[data-version-label]")).to_have_text("1 / 2")
        expect_path_matches_store(page)
    version_one = stored(first)["messages"]
    assert [message["on_path"] for message in version_one if message["role"] == "assistant"] == [True, False]

    question = first.locator(f"{SHOWN}[data-role=user]").last
    question.hover()
    question.get_by_role("button", name="Edit").click()
    field = first.get_by_label("Edit message")
    expect(field).to_have_value("Tell me about tables")
    field.fill("Tell me about lists instead")
    screenshot(first, "versions-editing")
    field.press("Enter")
    for page in (first, second):
        expect(page.locator("[data-role=user]")).to_have_count(2)
        edited = page.locator(f"{SHOWN}[data-role=user]").last
        expect(edited.locator("[data-body]")).to_have_text("Tell me about lists instead")
        expect(edited.locator("[data-version-label]")).to_have_text("2 / 2")
        expect(shown_reply(page)).to_have_attribute("data-status", "complete", timeout=REPLY_TIMEOUT_MS)
        expect_path_matches_store(page)
    first.locator(f"{SHOWN}[data-role=user]").last.hover()
    screenshot(first, "versions-desktop-light")

    first.reload()
    expect_path_matches_store(first)
    expect(first.locator(f"{SHOWN}[data-role=user]").last.locator("[data-version-label]")).to_have_text("2 / 2")

    # Back to the first question: below it, the newest version of its reply, the regenerated one.
    first.locator(f"{SHOWN}[data-role=user]").last.hover()
    first.locator(f"{SHOWN}[data-role=user]").last.get_by_role("button", name="Previous version").click()
    for page in (first, second):
        expect(page.locator(f"{SHOWN}[data-role=user]").last.locator("[data-body]")).to_have_text(
            "Tell me about tables"
        )
        expect(shown_reply(page).locator("[data-version-label]")).to_have_text("2 / 2")
        expect_path_matches_store(page)


def test_escape_leaves_the_editor_and_a_refused_edit_says_why(open_context):
    """Esc closes the editor without a new version; an edit while a reply streams is refused with a notice."""
    page = new_thread(open_context())
    send(page, "Short question")
    expect_reply_status(page, "complete")
    question = page.locator(f"{SHOWN}[data-role=user]").first
    question.hover()
    question.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").press("Escape")
    expect(page.get_by_label("Edit message")).to_have_count(0)
    expect(question.locator("[data-body]")).to_have_text("Short question")
    assert len(stored(page)["messages"]) == 2

    send(page, "A second question, to be busy")
    expect(shown_reply(page)).to_have_attribute("data-status", "streaming")
    question.hover()
    question.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").fill("Changed while busy")
    page.get_by_label("Edit message").press("Enter")
    expect(page.locator("[data-notice]")).to_contain_text("still being written")
    expect(page.get_by_label("Edit message")).to_have_value("Changed while busy")
    assert len(stored(page)["messages"]) == 4


@pytest.mark.parametrize("color_scheme, viewport", [("dark", DESKTOP), ("light", PHONE)])
def test_screenshots_of_versions(open_context, color_scheme, viewport):
    """The switcher and the message actions in dark mode and at 390 px, for a person to look at."""
    page = new_thread(open_context(viewport=viewport, color_scheme=color_scheme))
    send(page, "Show me a version switcher")
    expect_reply_status(page, "complete")
    shown_reply(page).hover()
    shown_reply(page).get_by_role("button", name="Regenerate").click()
    expect(shown_reply(page).locator("[data-version-label]")).to_have_text("2 / 2")
    expect(shown_reply(page)).to_have_attribute("data-status", "complete", timeout=REPLY_TIMEOUT_MS)
    box = shown_reply(page).locator("[data-versions]").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    name = "phone" if viewport is PHONE else "desktop"
    screenshot(page, f"versions-{name}-{color_scheme}")


def long_thread(server, exchanges: int) -> tuple[str, str]:
    """Write alice a thread of `exchanges` complete exchanges as its log would hold them; return its id, its first's."""
    created = server.shell(
        f"""
from django.contrib.auth.models import User
from django.utils import timezone
from streaming.models import Chunk
from threads.models import Message, Thread
thread = Thread.objects.create(owner=User.objects.get(username="alice"), title="A long thread")
messages, chunks, parent = [], [], None
for n in range({exchanges}):
    seq = 4 * n + 1
    question = Message(thread=thread, role="user", content=f"Question {{n}}", status="complete", seq=seq,
                       content_seq=seq, parent=parent)
    reply = Message(thread=thread, role="assistant", content=f"Answer {{n}}", status="complete", seq=seq + 1,
                    content_seq=seq + 3, parent=question, reply_to=question, completed_at=timezone.now())
    chunks += [Chunk(thread=thread, seq=seq, message=question, kind="message"),
               Chunk(thread=thread, seq=seq + 1, message=reply, kind="start"),
               Chunk(thread=thread, seq=seq + 2, message=reply, kind="delta", text=f"Answer {{n}}"),
               Chunk(thread=thread, seq=seq + 3, message=reply, kind="end")]
    messages += [question, reply]
    parent = reply
Message.objects.bulk_create(messages)
Chunk.objects.bulk_create(chunks)
Thread.objects.filter(pk=thread.pk).update(last_seq=4 * {exchanges})
print(thread.id, messages[0].id)
"""
    )
    thread_id, first_id = created.split()
    return thread_id, first_id


def test_versions_older_than_the_page_are_counted_and_shown(open_context, chat_server):
    """In a thread longer than its page, editing the first question counts its first version, and switching back
    to it shows the path's newest messages, though the page never held them as shown."""
    thread_id, first_id = long_thread(chat_server, 30)
    context = open_context()
    page = open_thread(context, f"/threads/{thread_id}/")
    expect(page.locator(SHOWN)).to_have_count(50)  # the newest page of the 60
    api_post(context, f"/api/threads/{thread_id}/messages/{first_id}/edit", {"content": "Question 0, again"})
    edited = page.locator(f"{SHOWN}[data-role=user]")
    expect(edited).to_have_count(1)
    expect(edited.locator("[data-version-label]")).to_have_text("2 / 2")
    expect(shown_reply(page)).to_have_attribute("data-status", "complete", timeout=REPLY_TIMEOUT_MS)
    expect_path_matches_store(page)

    edited.hover()
    edited.get_by_role("button", name="Previous version").click()
    expect(shown_reply(page).locator("[data-body]")).to_have_text("Answer 29")
    path = stored_path(page)
    assert len(path) == 60
    shown = shown_ids(page)
    assert len(shown) >= 40 and shown == path[-len(shown) :]
