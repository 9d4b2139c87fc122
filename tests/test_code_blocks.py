"""Code blocks in replies, in headless Chromium: a bar with the language, a Copy button, highlighting."""

import re

import pytest
from playwright.sync_api import expect

from .live_server import chat_server  # noqa: F401 - a fixture
from .test_browser import (  # noqa: F401 - browser, sessions and open_context are fixtures
    browser,
    expect_reply_status,
    last_reply,
    new_thread,
    open_context,
    send,
    sessions,
    stored,
)

pytestmark = pytest.mark.browser

FENCE = re.compile(r"```(\w+)\n(.*?)\n```", re.S)
# How long "Copied" shows, with room for a slow machine.
COPIED_TIMEOUT_MS = 10_000


@pytest.mark.parametrize("state", ["live", "reloaded"])
def test_code_block_is_labelled_highlighted_and_copied_by_keyboard(open_context, state):
    """A reply's code block names its language, is highlighted, and its Copy button copies the code by keyboard."""
    context = open_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = new_thread(context)
    send(page, "Show me some code")
    expect_reply_status(page, "complete")
    if state == "reloaded":
        page.reload()
    language, code = FENCE.search(stored(page)["messages"][-1]["content"]).groups()
    block = last_reply(page).locator(".code-block").first
    expect(block.locator(".code-block__language")).to_have_attribute("data-language", language)
    expect(block.locator(f"code.language-{language}.hljs span[class^=hljs-]").first).to_be_attached()

    copy = block.get_by_role("button", name="Copy code")
    copy.focus()
    page.keyboard.press("Enter")
    expect(block.get_by_role("button", name="Copied")).to_have_attribute("data-copied", "")
    assert page.evaluate("navigator.clipboard.readText()") == code
    expect(copy).to_have_accessible_name("Copy code", timeout=COPIED_TIMEOUT_MS)


def test_copying_a_reply_leaves_out_the_code_bar(open_context):
    """Selecting a whole reply selects its text only: the bar's label and button words are not in it."""
    page = new_thread(open_context())
    send(page, "Show me some code")
    expect_reply_status(page, "complete")
    body = last_reply(page).locator("[data-body]")
    expect(body.locator(".code-block")).not_to_have_count(0)
    selected = body.evaluate("(body) => { getSelection().selectAllChildren(body); return getSelection().toString(); }")
    assert "Copy" not in selected
    assert selected.split() == body.inner_text().split()
