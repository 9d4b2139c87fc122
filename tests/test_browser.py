"""End to end in headless Chromium: the thread page against a live daphne server.

Every wait is for a condition (Playwright's expect / wait_for_function), never a sleep.
What the server stored is read back through its JSON API with the page's own session.
"""

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from threads.templatetags.chat import render_markdown

from .live_server import PASSWORD, LiveServer, chat_server  # noqa: F401 - chat_server is a fixture

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# A scripted reply takes about 3 s (80 tokens at 30 per second); this leaves room for a slow machine.
REPLY_TIMEOUT_MS = 20_000
# How much of a reply must be on screen before a test interrupts it.
MID_REPLY_CHARS = 60

XSS_MESSAGE = (
    "Render me as text: <img src=x onerror=window.__xss=1> "
    "<script>window.__xss=1</script> [x](javascript:window.__xss=1)"
)

# What in the message texts could run: script-capable elements, event handlers, script URLs.
EXECUTABLE_IN_MESSAGES = """() => [...document.querySelectorAll("[data-messages] [data-body] *")].flatMap((element) => [
    ...(element.matches("img, script, svg, iframe, object, embed") ? [element.tagName] : []),
    ...[...element.attributes]
        .filter((attribute) => attribute.name.startsWith("on") || /^\\s*(javascript|data):/i.test(attribute.value))
        .map((attribute) => `${element.tagName} ${attribute.name}`),
])"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def sessions(chat_server: LiveServer, browser: Browser) -> dict[str, dict]:
    """Sign alice and bob in once, through the sign-in page, and keep their cookies."""
    chat_server.create_users("alice", "bob")
    states = {}
    for username in ("alice", "bob"):
        context = browser.new_context(base_url=chat_server.url)
        page = context.new_page()
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
        states[username] = context.storage_state()
        context.close()
    return states


@pytest.fixture
def open_context(browser: Browser, chat_server: LiveServer, sessions: dict[str, dict]):
    """Open signed-in browser contexts; fail the test on any script error in their pages."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_(username: str = "alice", viewport: dict = DESKTOP, color_scheme: str = "light") -> BrowserContext:
        context = browser.new_context(
            base_url=chat_server.url, storage_state=sessions[username], viewport=viewport, color_scheme=color_scheme
        )
        context.on("page", lambda page: page.on("pageerror", lambda error: errors.append(str(error))))
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], "script errors in the page"


def api_post(context: BrowserContext, path: str, body: dict) -> dict:
    """POST JSON to the API with the context's session and CSRF cookie; return the answer."""
    csrf = next(cookie["value"] for cookie in context.cookies() if cookie["name"] == "csrftoken")
    response = context.request.post(path, data=body, headers={"X-CSRFToken": csrf})
    assert response.ok, response.text()
    return response.json()


def new_thread(context: BrowserContext) -> Page:
    """Save an empty thread through the API (a second tab can then open it before the first send); open it, connected.

    The pages save a new chat only with its first message (tests/test_browser_pages.py).
    """
    page = context.new_page()
    page.goto(f"/threads/{api_post(context, '/api/threads', {})['id']}/")
    expect_connected(page)
    return page


def open_thread(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    expect_connected(page)
    return page


def expect_connected(page: Page) -> None:
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", re.compile("connected|reconnected"))


def send(page: Page, text: str) -> None:
    composer = page.get_by_label("Message")
    composer.fill(text)
    composer.press("Enter")


def last_reply(page: Page) -> Locator:
    return page.locator("[data-messages] [data-role=assistant]").last


def wait_mid_reply(page: Page, chars: int = MID_REPLY_CHARS) -> None:
    """Wait until the last reply is being written and shows at least `chars` characters."""
    page.wait_for_function(
        """(chars) => {
            const reply = [...document.querySelectorAll("[data-messages] [data-role=assistant]")].at(-1);
            return reply?.dataset.status === "streaming"
                && reply.querySelector("[data-body]").innerText.length >= chars;
        }""",
        arg=chars,
        timeout=REPLY_TIMEOUT_MS,
    )


def expect_reply_status(page: Page, status: str) -> None:
    expect(last_reply(page)).to_have_attribute("data-status", status, timeout=REPLY_TIMEOUT_MS)


def thread_id(page: Page) -> str:
    return page.locator("[data-thread-id]").get_attribute("data-thread-id")


def stored(page: Page) -> dict:
    """Return the thread as the server stored it, read through the JSON API with the page's session, every page."""
    response = page.request.get(f"/api/threads/{thread_id(page)}")
    assert response.ok
    snapshot = response.json()
    while snapshot["next"] is not None:
        earlier = page.request.get(f"/api/threads/{thread_id(page)}?before={snapshot['next']}").json()
        snapshot |= {"messages": earlier["messages"] + snapshot["messages"], "next": earlier["next"]}
    return snapshot


class PageText(HTMLParser):
    """The text of an HTML fragment, as a browser shows it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.feed(html)
        self.close()

    def handle_data(self, data: str) -> None:
        self.text += data


def as_shown(markdown: str) -> str:
    """Return the words a reader sees for `markdown`: the text of the server's rendering of it."""
    return " ".join(PageText(render_markdown(markdown)).text.split())


def shown(page: Page) -> str:
    """Return the words of the last reply as the page shows them."""
    return " ".join(last_reply(page).locator("[data-body]").inner_text().split())


def expect_page_matches_store(page: Page) -> None:
    """Every message on the page is the stored one, in order, with the stored status and text."""
    messages = stored(page)["messages"]
    items = page.locator("[data-messages] > [data-message-id]")
    expect(items).to_have_count(len(messages))
    for index, message in enumerate(messages):
        item = items.nth(index)
        assert item.get_attribute("data-message-id") == message["id"]
        assert item.get_attribute("data-status") == message["status"]
        assert " ".join(item.locator("[data-body]").inner_text().split()) == as_shown(message["content"])


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def test_two_tabs_see_the_message_and_the_reply_stream(open_context):
    """A message sent in one tab appears in both, and the reply streams in both to the stored text."""
    context = open_context()
    first = new_thread(context)
    second = open_thread(context, first.url)
    send(first, "Hello from the first tab, tell me about streaming")
    for page in (first, second):
        expect(page.locator("[data-role=user]")).to_have_text(re.compile("Hello from the first tab"))
    wait_mid_reply(second)
    screenshot(first, "thread-desktop-light-mid")
    for page in (first, second):
        expect_reply_status(page, "complete")
        expect_page_matches_store(page)
    screenshot(first, "thread-desktop-light-end")
    # The first message named the thread, and the page picked the name up without a reload.
    expect(first.get_by_role("heading", level=1)).to_have_text("Hello from the first tab, tell me about streaming")


def test_rename_in_one_tab_shows_in_the_other(open_context):
    """Renaming the thread in one tab changes the heading and the window title of another tab on it, live."""
    context = open_context()
    first = new_thread(context)
    second = open_thread(context, first.url)
    first.get_by_role("button", name="Rename thread").click()
    first.get_by_label("Thread title").fill("Trip to Lisbon")
    first.get_by_role("button", name="Save").click()
    expect(second.get_by_role("heading", level=1)).to_have_text("Trip to Lisbon")
    expect(second).to_have_title("Trip to Lisbon · chatsite")
    assert stored(second)["title"] == "Trip to Lisbon"


def test_reload_mid_reply_resumes_without_gaps_or_doubles(open_context):
    """A reload mid-reply renders the text so far on the server and streams the rest, nothing doubled or missing."""
    page = new_thread(open_context(viewport=PHONE, color_scheme="dark"))
    send(page, "Please keep talking while I reload the page")
    wait_mid_reply(page)
    reloaded = page.reload()
    # The server rendered the reply as it stood: still being written, with its text so far.
    html = reloaded.text()
    assert 'data-role="assistant" data-status="streaming"' in html
    assert re.search(r'data-content="You wrote: [^"]{40,}"', html)
    screenshot(page, "thread-phone-dark-mid")
    expect_reply_status(page, "complete")
    expect_page_matches_store(page)
    screenshot(page, "thread-phone-dark-end")


def test_network_cut_mid_reply_reconnects_and_completes(open_context):
    """Going offline mid-reply shows it; back online the client reconnects from its cursor and completes."""
    context = open_context()
    page = new_thread(context)
    send(page, "Stay with me through a network cut")
    wait_mid_reply(page)
    context.set_offline(True)
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "offline")
    context.set_offline(False)
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnected")
    expect_reply_status(page, "complete")
    expect_page_matches_store(page)


def test_server_closing_the_socket_mid_reply_reconnects(open_context):
    """A socket the server drops mid-reply is reopened from the cursor; the reply completes once."""
    context = open_context()
    page = new_thread(context)
    sockets = []

    def pass_through(route) -> None:
        route.connect_to_server()  # frames flow both ways untouched until the test closes it
        sockets.append(route)

    page.route_web_socket(re.compile(r"/ws/threads/"), pass_through)
    page.reload()
    expect_connected(page)
    send(page, "Survive the server closing my socket")
    wait_mid_reply(page)
    sockets[-1].close(code=1011, reason="server going away")
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnected")
    expect_reply_status(page, "complete")
    assert len(sockets) >= 2
    expect_page_matches_store(page)


def test_send_whose_socket_drops_before_confirmation_posts_once(open_context):
    """A send cut off before its confirmation is repeated on reconnect with its client_id: one message, one reply."""
    page = new_thread(open_context())
    cut = []

    def cut_after_first_send(route) -> None:
        server = route.connect_to_server()

        def from_page(frame) -> None:
            server.send(frame)
            if '"type":"send"' in frame and not cut:
                cut.append(frame)
                route.close(code=1011, reason="network hiccup")

        route.on_message(from_page)

    page.route_web_socket(re.compile(r"/ws/threads/"), cut_after_first_send)
    page.reload()
    expect_connected(page)
    send(page, "Post me exactly once")
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnected")
    expect_reply_status(page, "complete")
    assert len(cut) == 1
    expect(page.locator(".message--pending")).to_have_count(0)
    assert [message["role"] for message in stored(page)["messages"]] == ["user", "assistant"]
    expect_page_matches_store(page)


def drop_first_frame(kind: str, dropped: list[str]):
    """Return a WebSocket route passing frames both ways but the page's first `kind` frame, lost as its socket dies."""

    def route_socket(route) -> None:
        server = route.connect_to_server()

        def from_page(frame) -> None:
            if f'"type":"{kind}"' in frame and not dropped:
                dropped.append(frame)
                route.close(code=1011, reason="network hiccup")
                return
            server.send(frame)

        route.on_message(from_page)

    return route_socket


def test_stop_whose_socket_drops_before_the_server_hears_it_is_asked_again(open_context):
    """A Stop lost with its socket is sent again once reconnected: the reply ends `cancelled`, not complete."""
    page = new_thread(open_context())
    dropped: list[str] = []
    page.route_web_socket(re.compile(r"/ws/threads/"), drop_first_frame("cancel", dropped))
    page.reload()
    expect_connected(page)
    send(page, "Stop me even though my Stop is lost")
    wait_mid_reply(page, chars=1)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnected")
    expect(last_reply(page)).not_to_have_attribute("data-status", "streaming", timeout=REPLY_TIMEOUT_MS)
    assert len(dropped) == 1
    assert last_reply(page).get_attribute("data-status") == "cancelled"
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.locator("[data-notice]")).to_be_hidden()
    expect_page_matches_store(page)


def test_stop_cancels_the_reply_in_every_tab_and_retry_answers_again(open_context):
    """Stop (Esc) ends the reply `cancelled` with its partial text in both tabs; Retry writes a new reply."""
    context = open_context()
    first = new_thread(context)
    second = open_thread(context, first.url)
    send(first, "Start a long answer that I will stop")
    wait_mid_reply(second)
    second.keyboard.press("Escape")
    for page in (first, second):
        expect_reply_status(page, "cancelled")
        expect(last_reply(page).get_by_text("Stopped")).to_be_visible()
        expect_page_matches_store(page)
    cancelled = stored(first)["messages"][-1]
    assert cancelled["status"] == "cancelled" and cancelled["content"]
    screenshot(first, "thread-desktop-light-stopped")

    last_reply(first).get_by_role("button", name="Retry").click()
    for page in (first, second):
        expect(page.locator("[data-role=assistant]")).to_have_count(2)
        expect_reply_status(page, "complete")
        expect_page_matches_store(page)


def test_stop_button_and_busy_send(open_context):
    """While a reply streams the send button is disabled and Stop shows; Stop ends it."""
    page = new_thread(open_context())
    send(page, "Is the send button disabled now?")
    wait_mid_reply(page, chars=1)
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    send(page, "A second message while busy")
    expect(page.locator("[data-notice]")).to_contain_text("still being written")
    page.get_by_role("button", name="Stop").click()
    expect_reply_status(page, "cancelled")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert len(stored(page)["messages"]) == 2


def test_xss_payloads_render_as_text(open_context):
    """Payloads in a user message, and so in the reply quoting it, render as text: nothing runs."""
    page = new_thread(open_context())
    send(page, XSS_MESSAGE)
    expect_reply_status(page, "complete")
    for state in ("live", "server-rendered"):
        expect(page.locator("[data-role=user]")).to_contain_text("<img src=x onerror=window.__xss=1>")
        expect(last_reply(page)).to_contain_text("<script>window.__xss=1</script>")
        assert page.evaluate(EXECUTABLE_IN_MESSAGES) == [], state
        assert page.evaluate("typeof window.__xss") == "undefined", state
        page.reload()
        expect_connected(page)


def test_second_user_cannot_see_or_open_anothers_thread(open_context):
    """Bob's list does not show Alice's thread; her page, API and socket all answer as if it did not exist."""
    alice = new_thread(open_context("alice"))
    send(alice, "A private note about my plans")
    expect_reply_status(alice, "complete")
    bob = open_context("bob").new_page()
    bob.goto("/")
    expect(bob.get_by_role("heading", name="Your threads")).to_be_visible()
    expect(bob.get_by_text("A private note")).to_have_count(0)
    assert bob.goto(alice.url).status == 404
    assert bob.request.get(f"/api/threads/{thread_id(alice)}").status == 404
    close_code = bob.evaluate(
        """(id) => new Promise((resolve) => {
            const socket = new WebSocket(`ws://${location.host}/ws/threads/${id}/?after=0`);
            socket.onclose = (event) => resolve(event.code);
        })""",
        thread_id(alice),
    )
    assert close_code == 4404


LONG_THREAD_EXCHANGES = 26  # 52 messages: two more than the page renders

# Runs in the server's database. A worker may take a reply before it is cancelled; the next
# send then waits for that reply to end.
CREATE_LONG_THREAD = f"""
import time
from django.contrib.auth.models import User
from streaming.errors import Busy
from streaming.services.endings import generation_cancel
from threads.services import message_post, thread_create

thread = thread_create(owner=User.objects.get(username="alice"), title="A long conversation")
for index in range({LONG_THREAD_EXCHANGES}):
    while True:
        try:
            message_post(thread=thread, content=f"Question {{index}}", client_id=None)
            break
        except Busy:
            time.sleep(0.05)
    generation_cancel(thread=thread)
print(thread.id)
"""


def test_earlier_messages_page_in_above_without_moving_the_view(open_context, chat_server):
    """A long thread opens on its newest messages; "Show earlier messages" adds the rest above, in place."""
    page = open_thread(open_context(), f"/threads/{chat_server.shell(CREATE_LONG_THREAD)}/")
    items = page.locator("[data-messages] > [data-message-id]")
    expect(items).to_have_count(50)
    expect(items.first.locator("[data-body]")).to_have_text("Question 1")
    page.evaluate("window.scrollTo(0, 0)")
    oldest_shown = items.first.element_handle()
    top = oldest_shown.bounding_box()["y"]
    page.get_by_role("button", name="Show earlier messages").click()
    expect(items).to_have_count(2 * LONG_THREAD_EXCHANGES)
    expect(page.get_by_role("button", name="Show earlier messages")).to_have_count(0)
    assert abs(oldest_shown.bounding_box()["y"] - top) < 2, "the messages the reader saw stayed put"
    expect(items.first.locator("[data-body]")).to_have_text("Question 0")
    expect_page_matches_store(page)


def test_thread_list_marks_the_thread_replying(open_context):
    """The thread list shows "replying…" on a thread whose reply is being written, and clears it."""
    context = open_context(viewport=PHONE)
    page = new_thread(context)
    send(page, "Mark me as replying on the list")
    wait_mid_reply(page, chars=1)
    listing = context.new_page()
    listing.goto("/")
    item = listing.locator(f"[data-thread-id='{thread_id(page)}']")
    expect(item.locator("[data-replying]")).to_be_visible()
    screenshot(listing, "list-phone-light")
    expect(item.locator("[data-replying]")).to_be_hidden(timeout=REPLY_TIMEOUT_MS)


@pytest.mark.parametrize(
    "viewport,color_scheme", [(DESKTOP, "dark"), (PHONE, "light")], ids=["desktop-dark", "phone-light"]
)
def test_screenshots(open_context, chat_server, viewport, color_scheme):
    """The thread page mid-reply and at the end, and the sign-in page, for looking at (test-artifacts/)."""
    context = open_context(viewport=viewport, color_scheme=color_scheme)
    page = new_thread(context)
    send(page, "Show me how a reply looks\nwith a second line, **bold** and `code`")
    wait_mid_reply(page)
    name = f"{'desktop' if viewport is DESKTOP else 'phone'}-{color_scheme}"
    screenshot(page, f"thread-{name}-mid")
    expect_reply_status(page, "complete")
    screenshot(page, f"thread-{name}-end")
    signed_out = context.browser.new_context(viewport=viewport, color_scheme=color_scheme, base_url=chat_server.url)
    login = signed_out.new_page()
    login.goto("/accounts/login/")
    screenshot(login, f"sign-in-{name}")
    signed_out.close()


BIG_EXCHANGES = 9
BIG_QUESTION_WORDS = 6400  # 32,000 characters, the longest message allowed

CREATE_BIG_THREAD = CREATE_LONG_THREAD.replace(f"range({LONG_THREAD_EXCHANGES})", f"range({BIG_EXCHANGES})").replace(
    'content=f"Question {index}"', f'content=f"Question {{index}} " + "word " * {BIG_QUESTION_WORDS - 3}'
)

POST_WHILE_AWAY = """
from streaming.services.endings import generation_cancel
from threads.models import Thread
from threads.services import message_post

thread = Thread.objects.get(pk="{thread_id}")
message_post(thread=thread, content="Written while you were away", client_id=None)
generation_cancel(thread=thread)
"""


def test_tab_whose_cursor_was_pruned_resumes_from_a_reset_and_pages_in_the_rest(open_context, chat_server):
    """Back from a cut after prunechunks, a tab takes a reset that fits one frame, then pages in what it left out."""
    context = open_context()
    page = open_thread(context, f"/threads/{chat_server.shell(CREATE_BIG_THREAD)}/")
    items = page.locator("[data-messages] > [data-message-id]")
    expect(items).to_have_count(2 * BIG_EXCHANGES)
    context.set_offline(True)
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "offline")
    chat_server.shell(POST_WHILE_AWAY.format(thread_id=thread_id(page)))
    chat_server.manage("prunechunks", "--older-than", "0m")  # the tab's cursor now lies in the pruned range
    context.set_offline(False)
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnected")
    written_away = items.nth(-2).locator("[data-body]")  # the last is its reply, stopped
    expect(written_away).to_have_text("Written while you were away", timeout=REPLY_TIMEOUT_MS)
    assert items.count() < 2 * BIG_EXCHANGES, "a reset of the whole thread would not fit one frame"
    page.get_by_role("button", name="Show earlier messages").click()
    expect(items).to_have_count(2 * BIG_EXCHANGES + 2)
    expect(items.first.locator("[data-body]")).to_contain_text("Question 0 word word")
    expect(page.get_by_role("button", name="Show earlier messages")).to_have_count(0)
