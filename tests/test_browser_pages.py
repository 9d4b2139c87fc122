"""End to end in headless Chromium: the chat pages around the conversation.

New chats saved on their first message, the sidebar (switching, search, dates, the phone
drawer), archive and delete, copy and timestamps, the composer's limit, the busy notice,
"Jump to latest", the list's live markers, and screenshots of each page for looking at.
"""

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .live_server import PASSWORD, LiveServer, chat_server  # noqa: F401 - fixture
from .test_browser import (  # noqa: F401 - browser, sessions and open_context are fixtures
    CREATE_LONG_THREAD,
    DESKTOP,
    PHONE,
    REPLY_TIMEOUT_MS,
    api_post,
    browser,
    expect_connected,
    expect_reply_status,
    last_reply,
    new_thread,
    open_context,
    screenshot,
    send,
    sessions,
    stored,
    thread_id,
    wait_mid_reply,
)

pytestmark = pytest.mark.browser

THREAD_URL = re.compile(r"/threads/[0-9a-f-]{36}/$")
BUSY_OWN = "The reply is still being written. Wait for the reply to finish or stop it (Esc)."
TOO_LONG = "A message may be at most 32000 characters long."

# Runs in the server's database: threads of `username` titled and aged as given (days since their last activity).
AGED_THREADS = """
import time
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from threads.models import Message, Thread
from streaming.services.endings import generation_cancel
from threads.services import message_post, thread_create

owner = User.objects.get(username={username!r})
for title, age_days, text in {threads!r}:
    thread = thread_create(owner=owner, title=title)
    if text:
        posted = message_post(thread=thread, content=text, client_id=None)
        generation_cancel(thread=thread)
        # A worker that claimed the reply first ends it itself, and its end touches the thread:
        # age the thread only once the reply has ended.
        deadline = time.monotonic() + 10
        while Message.objects.get(pk=posted.reply.pk).status == Message.Status.STREAMING:
            assert time.monotonic() < deadline, "the cancelled reply did not end"
            time.sleep(0.05)
    Thread.objects.filter(pk=thread.pk).update(updated_at=timezone.now() - timedelta(days=age_days))
print("ok")
"""


def make_threads(server: LiveServer, username: str, threads: list[tuple[str, int, str]]) -> None:
    assert server.shell(AGED_THREADS.format(username=username, threads=threads)) == "ok"


def listed_titles(context: BrowserContext) -> list[str]:
    response = context.request.get("/api/threads")
    assert response.ok
    return [thread["title"] for thread in response.json()["threads"]]


def sidebar(page: Page):
    return page.get_by_role("complementary", name="Chats")


def open_new_chat(context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto("/")
    page.get_by_role("link", name="New chat").click()
    page.wait_for_url(re.compile(r"/new/$"))
    return page


def test_new_chat_is_saved_with_its_first_message_under_a_clean_title(open_context):
    """New chat saves nothing; the first message saves the thread, titled from its Markdown; the page follows it."""
    context = open_context("bob")
    before = listed_titles(context)
    page = open_new_chat(context)
    page.reload()  # opening and reopening a draft saves nothing either
    assert listed_titles(context) == before
    expect(page.locator("h1[data-title-text]")).to_have_text("New chat")
    expect(page.get_by_role("button", name="Rename thread")).to_be_hidden()
    send(page, "# Plan a **trip** to [Lisbon](https://example.com)\nwith `trains`, please")
    expect(page).to_have_url(THREAD_URL)
    expect(page.locator("h1[data-title-text]")).to_have_text("Plan a trip to Lisbon")
    expect(page).to_have_title("Plan a trip to Lisbon · chatsite")
    current = sidebar(page).locator("[aria-current=page] [data-title]")
    expect(current).to_have_text("Plan a trip to Lisbon")
    expect_connected(page)
    expect_reply_status(page, "complete")
    assert stored(page)["title"] == "Plan a trip to Lisbon"
    assert [m["role"] for m in stored(page)["messages"]] == ["user", "assistant"]
    assert listed_titles(context) == ["Plan a trip to Lisbon", *before]
    expect(page.locator(".message--pending")).to_have_count(0)


def test_delete_asks_for_confirmation(open_context):
    """Delete opens a dialog naming the thread: Cancel keeps it, Delete removes it from the list and the server."""
    context = open_context()
    doomed = api_post(context, "/api/threads", {"title": "Doomed plans"})
    page = context.new_page()
    page.goto("/")
    row = page.locator(f"[data-thread-id='{doomed['id']}']")
    row.get_by_role("link", name="Delete Doomed plans").click()
    dialog = page.get_by_role("dialog", name="Delete chat?")
    expect(dialog).to_contain_text("Doomed plans")
    screenshot(page, "pages-delete-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert context.request.get(f"/api/threads/{doomed['id']}").ok
    row.get_by_role("link", name="Delete Doomed plans").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert context.request.get(f"/api/threads/{doomed['id']}").status == 404


def test_delete_from_the_thread_page_goes_to_a_new_chat(open_context):
    """The thread page's menu deletes the open thread after the same confirmation, then opens a new chat."""
    page = new_thread(open_context())
    deleted = thread_id(page)
    page.locator("summary[aria-label='Chat actions']").click()
    page.get_by_role("link", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"/new/$"))
    assert page.request.get(f"/api/threads/{deleted}").status == 404


def test_archive_and_unarchive(open_context):
    """Archiving moves a thread from the list to the archived view; unarchiving brings it back."""
    context = open_context()
    page = context.new_page()
    archived = api_post(context, "/api/threads", {"title": "Put away for later"})
    page.goto(f"/threads/{archived['id']}/")
    expect_connected(page)
    page.locator("summary[aria-label='Chat actions']").click()
    page.get_by_role("button", name="Archive").click()
    page.wait_for_url(re.compile(r"/new/$"))
    expect(sidebar(page)).not_to_contain_text("Put away for later")
    page.goto("/")
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    expect(page.locator(f"[data-thread-id='{archived['id']}']")).to_have_count(0)
    page.get_by_role("link", name="Archived").click()
    expect(page.get_by_role("heading", name="Archived threads")).to_be_visible()
    row = page.locator(f"[data-thread-id='{archived['id']}']")
    expect(row).to_contain_text("Put away for later")
    row.get_by_role("button", name="Unarchive Put away for later").click()
    expect(row).to_have_count(0)
    page.goto("/")
    expect(page.locator(f"[data-thread-id='{archived['id']}']")).to_contain_text("Put away for later")


def test_sidebar_groups_switches_and_searches(open_context, chat_server):
    """The sidebar groups threads by date, switches between them, and searches titles and message text."""
    make_threads(
        chat_server,
        "bob",
        [
            ("Moon landing notes", 0, ""),
            ("Gardening", 1, "Which tomatoes grow in shade?"),
            ("Tax questions", 3, ""),
            ("Old recipes", 12, "A needle-in-a-haystack soup"),
        ],
    )
    context = open_context("bob")
    page = context.new_page()
    page.goto("/")
    page.get_by_role("link", name=re.compile(r"^Tax questions")).click()
    expect_connected(page)
    bar = sidebar(page)
    labels = bar.locator(".sidebar__label")
    expect(labels.first).to_have_text("Today")
    for label in ("Yesterday", "Previous 7 days", "Previous 30 days"):
        expect(bar.get_by_role("heading", name=label)).to_be_visible()
    expect(bar.locator("[aria-current=page] [data-title]")).to_have_text("Tax questions")
    screenshot(page, "pages-thread-sidebar-desktop-light")
    bar.get_by_role("link", name="Gardening").click()
    page.wait_for_url(THREAD_URL)
    expect(page.get_by_role("heading", level=1)).to_have_text("Gardening")
    expect(sidebar(page).locator("[aria-current=page] [data-title]")).to_have_text("Gardening")
    search = sidebar(page).get_by_role("searchbox", name="Search chats")
    search.fill("NEEDLE")  # in a message's text, not a title
    expect(sidebar(page).locator(".sidebar__title")).to_have_text(["Old recipes"])
    search.fill("moon")
    expect(sidebar(page).locator(".sidebar__title")).to_have_text(["Moon landing notes"])
    search.fill("nothing like this")
    expect(sidebar(page)).to_contain_text("No chats match")
    search.fill("")
    expect(sidebar(page).get_by_role("link", name="Tax questions", exact=True)).to_be_visible()


def test_sidebar_collapses_and_stays_collapsed(open_context):
    """On a wide screen the sidebar collapses with its toggle and stays collapsed after a reload."""
    page = new_thread(open_context())
    toggle = page.get_by_role("button", name="Chats")
    expect(sidebar(page)).to_be_visible()
    toggle.click()
    expect(sidebar(page)).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.reload()
    expect(sidebar(page)).to_be_hidden()
    new_chat = page.get_by_role("main").get_by_role("link", name="New chat")
    expect(new_chat).to_be_visible()  # the sidebar's New chat is out of sight: the header offers it
    page.get_by_role("button", name="Chats").click()
    expect(sidebar(page)).to_be_visible()
    expect(new_chat).to_be_hidden()


def test_phone_drawer(open_context):
    """At 390 px the sidebar is a drawer: closed at first, opened by its button, closed by Esc (the reply goes on)."""
    page = new_thread(open_context(viewport=PHONE))
    expect(sidebar(page)).to_be_hidden()
    send(page, "Keep writing while I look at my other chats")
    wait_mid_reply(page, chars=1)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "nothing wider than the screen"
    screenshot(page, "pages-phone-drawer-closed")
    page.get_by_role("button", name="Chats").click()
    expect(sidebar(page)).to_be_visible()
    expect(sidebar(page).get_by_role("link", name="New chat", exact=True)).to_be_in_viewport()
    screenshot(page, "pages-phone-drawer-open")
    page.keyboard.press("Escape")
    expect(sidebar(page)).to_be_hidden()
    expect(page.get_by_role("button", name="Chats")).to_be_focused()
    expect_reply_status(page, "complete")  # Esc closed the drawer; it did not stop the reply
    page.get_by_role("button", name="Chats").click()
    sidebar(page).get_by_role("button", name="Close chats").click()
    expect(sidebar(page)).to_be_hidden()


def test_copy_puts_the_markdown_on_the_clipboard(open_context, browser, chat_server, sessions):
    """Copy on a reply and on a message puts its Markdown source on the clipboard."""
    context = browser.new_context(
        base_url=chat_server.url,
        storage_state=sessions["alice"],
        viewport=DESKTOP,
        permissions=["clipboard-read", "clipboard-write"],
    )
    try:
        page = new_thread(context)
        send(page, "Copy **this** message")
        expect_reply_status(page, "complete")
        reply = last_reply(page)
        reply.get_by_role("button", name="Copy", exact=True).click()
        expect(reply.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == stored(page)["messages"][-1]["content"]
        question = page.locator("[data-role=user]").last
        question.hover()
        question.get_by_role("button", name="Copy", exact=True).click()
        assert page.evaluate("navigator.clipboard.readText()") == "Copy **this** message"
        page.goto("/account/tokens/")
        page.get_by_label("Name").fill("copied")
        page.get_by_role("button", name="Create token").click()
        page.locator("[data-new-token]").get_by_role("button", name="Copy").click()
        expect(page.locator("[data-new-token]").get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == page.locator("[data-token-secret]").inner_text()
    finally:
        context.close()


def test_timestamps_show_relative_time_with_the_exact_one_on_hover(open_context):
    """Live and server-rendered messages show "just now" with the exact local time as the title, at the stored time."""
    page = new_thread(open_context())
    send(page, "What time is it?")
    expect_reply_status(page, "complete")
    for state in ("live", "server-rendered"):
        times = page.locator("[data-messages] [data-time]")
        expect(times).to_have_count(2)
        expect(times).to_have_text(["just now", "just now"])
        for message, time in zip(stored(page)["messages"], times.all(), strict=True):
            shown_at = page.evaluate("(iso) => Date.parse(iso)", time.get_attribute("datetime"))
            assert shown_at == page.evaluate("(iso) => Date.parse(iso)", message["created_at"]), state
            assert re.search(r"\d{4}", time.get_attribute("title")), state
        page.reload()
        expect_connected(page)


def test_too_long_message_shows_the_limit_and_sends_nothing(open_context):
    """A paste over the limit is kept whole, counted, and refused with the server's words; nothing is sent."""
    page = new_thread(open_context())
    composer = page.get_by_label("Message")
    counter = page.locator("[data-count]")
    composer.fill("a" * 28_000)
    expect(counter).to_be_hidden()
    composer.fill("a" * 29_000)
    expect(counter).to_have_text("29,000 / 32,000")
    composer.fill("b" * 32_500)
    expect(counter).to_have_text("32,500 / 32,000 · 500 over the limit")
    composer.press("Enter")
    expect(page.locator("[data-notice]")).to_have_text(TOO_LONG)
    assert page.evaluate("document.querySelector('#composer-content').value.length") == 32_500
    assert stored(page)["messages"] == []
    screenshot(page, "pages-too-long")
    composer.fill("Short again")
    expect(counter).to_be_hidden()
    composer.press("Enter")
    expect_reply_status(page, "complete")
    assert [m["content"] for m in stored(page)["messages"][:1]] == ["Short again"]


def test_busy_notice_names_this_tabs_reply_and_covers_no_text(open_context):
    """Enter during this tab's reply says to wait or stop it, below the text; another tab is told it is elsewhere."""
    context = open_context(viewport={"width": 1280, "height": 600})
    page = new_thread(context)
    other = context.new_page()
    other.goto(page.url)
    expect_connected(other)
    send(page, "Write a reply long enough to fill the screen, please")
    wait_mid_reply(page)
    current_dot = sidebar(page).locator("[aria-current=page] [data-replying]")
    expect(current_dot).to_be_visible()
    send(page, "Another one")
    notice = page.locator("[data-notice]")
    expect(notice).to_have_text(BUSY_OWN)
    # The newest line of the reply stays above the notice while the reply keeps growing.
    page.wait_for_function(
        """() => {
            const body = [...document.querySelectorAll("[data-role=assistant] [data-body]")].at(-1);
            const dock = document.querySelector("[data-dock]");
            return body.getBoundingClientRect().bottom <= dock.getBoundingClientRect().top + 1;
        }"""
    )
    screenshot(page, "pages-busy-notice")
    wait_mid_reply(other, chars=1)
    send(other, "From the other tab")
    expect(other.locator("[data-notice]")).to_contain_text("another tab or on another device")
    expect_reply_status(page, "complete")
    expect(notice).to_be_hidden()
    expect(current_dot).to_be_hidden()


def test_jump_to_latest_appears_when_scrolled_up_mid_reply(open_context, chat_server):
    """Scrolled up while a reply streams, the reader gets "Jump to latest", which takes them to the newest text."""
    page = open_context(viewport={"width": 1280, "height": 600}).new_page()
    page.goto(f"/threads/{chat_server.shell(CREATE_LONG_THREAD)}/")
    expect_connected(page)
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_hidden()
    send(page, "Stream while I read the top")
    page.wait_for_function(
        "() => document.querySelector('[data-role=assistant][data-status=streaming]') !== null",
        timeout=REPLY_TIMEOUT_MS,
    )
    page.evaluate("window.scrollTo(0, 0)")
    expect(jump).to_be_visible(timeout=REPLY_TIMEOUT_MS)
    screenshot(page, "pages-jump-to-latest")
    jump.click()
    expect(jump).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollHeight - (scrollY + innerHeight)") < 100, "at the bottom"


def test_list_marks_a_reply_started_on_another_device(open_context):
    """The list, open on one device, shows "replying…" for a reply started on another one, and clears it."""
    listing = open_context().new_page()
    listing.goto("/")
    expect(listing.get_by_role("heading", name="Your threads")).to_be_visible()
    elsewhere = open_context()
    started = api_post(elsewhere, "/api/threads", {"title": "From my phone"})
    api_post(elsewhere, f"/api/threads/{started['id']}/messages", {"content": "Quick one"})
    item = listing.locator(f"[data-thread-id='{started['id']}']")
    expect(item.locator("[data-replying]")).to_be_visible(timeout=3_000)
    expect(item).to_contain_text("From my phone")
    expect(item.locator("[data-replying]")).to_be_hidden(timeout=REPLY_TIMEOUT_MS)


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_screenshots_of_the_pages(open_context, chat_server, color_scheme):
    """The thread list, a thread with its sidebar, and the tokens page, for looking at (test-artifacts/)."""
    context = open_context(color_scheme=color_scheme)
    page = new_thread(context)
    send(page, "Show me a reply with **bold**, `code` and a list:\n\n- one\n- two")
    expect_reply_status(page, "complete")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(22, 23, 26)") == (color_scheme == "dark"), background
    page.mouse.move(0, 0)
    screenshot(page, f"pages-thread-desktop-{color_scheme}")
    page.goto("/")
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    screenshot(page, f"pages-list-desktop-{color_scheme}")
    page.goto("/account/tokens/")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("[data-new-token]")).to_be_visible()
    screenshot(page, f"pages-tokens-desktop-{color_scheme}")


ADMIN_USER = """
from django.contrib.auth.models import User
if not User.objects.filter(username="root").exists():
    User.objects.create_superuser("root", password={password!r})
print("ok")
"""


def test_screenshots_of_the_admin(browser, chat_server, open_context):
    """The generation and message lists at 1920 px, for looking at: nothing clipped, no red cross on healthy rows."""
    page = new_thread(open_context())
    send(page, "Something for the admin to show")
    expect_reply_status(page, "complete")
    assert chat_server.shell(ADMIN_USER.format(password=PASSWORD)) == "ok"
    admin = browser.new_context(base_url=chat_server.url, viewport={"width": 1920, "height": 1000})
    try:
        page = admin.new_page()
        page.goto("/admin/login/")
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.goto("/admin/streaming/generation/")
        expect(page.locator("#result_list")).to_be_visible()
        assert page.locator("#result_list img[alt=False]").count() == 0
        assert page.evaluate("document.querySelector('#changelist .results').scrollWidth") <= page.evaluate(
            "document.querySelector('#changelist .results').clientWidth"
        ), "no column cut off"
        screenshot(page, "admin-generations-1920")
        page.goto("/admin/threads/message/")
        table = page.locator("#result_list")
        expect(table).to_contain_text("Something for the admin to show")
        assert page.evaluate("document.querySelector('#changelist .results').scrollWidth") <= page.evaluate(
            "document.querySelector('#changelist .results').clientWidth"
        ), "no column cut off"
        screenshot(page, "admin-messages-1920")
    finally:
        admin.close()
