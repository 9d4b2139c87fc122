"""Sharing end to end in headless Chromium: two people in two browser contexts on one thread.

Alice shares her thread with Bob from the share dialog; each sees the other watching; Bob
writes as a participant, his message on the right of his screen and on the left of hers
under his name; the reply streams to both alike; made a viewer, Bob loses the composer;
removed, his page is cut off. Screenshots land in test-artifacts/.
"""

import re

import pytest
from playwright.sync_api import Page, expect

from .live_server import chat_server  # noqa: F401 - a fixture
from .test_browser import (  # noqa: F401 - browser, sessions and open_context are fixtures
    REPLY_TIMEOUT_MS,
    api_post,
    browser,
    expect_connected,
    open_context,
    open_thread,
    screenshot,
    send,
    sessions,
)

pytestmark = pytest.mark.browser


def watching(page: Page, name: str):
    return page.locator(f'[data-presence] [title="{name} is watching"]')


def last_reply_text(page: Page) -> str:
    return page.locator('[data-role="assistant"]').last.get_attribute("data-content") or ""


def test_two_people_share_a_thread_live(open_context, chat_server):  # noqa: F811
    """Alice shares with Bob; they see each other, Bob writes, both get the same reply; his access ends at once."""
    alice_context, bob_context = open_context("alice"), open_context("bob")
    thread_id = api_post(alice_context, "/api/threads", {"title": "Trip plans"})["id"]
    alice = open_thread(alice_context, f"/threads/{thread_id}/")

    alice.get_by_role("button", name="Share").click()
    dialog = alice.locator("[data-share-dialog]")
    dialog.get_by_label("Username").fill("bob")
    dialog.get_by_label("Role", exact=True).select_option("participant")
    dialog.get_by_role("button", name="Add").click()
    expect(dialog.get_by_label("Role of bob")).to_have_value("participant")
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog.locator("[data-share-new-url]")).to_have_value(re.compile(r"/s/chl_"))
    screenshot(alice, "sharing-dialog")
    dialog.get_by_role("button", name="Done").click()

    bob = open_thread(bob_context, f"/threads/{thread_id}/")
    expect(bob.get_by_text("Shared by alice · participant")).to_be_visible()
    expect(watching(alice, "bob")).to_be_visible()
    expect(watching(bob, "alice")).to_be_visible()

    send(bob, "Where shall we go?")
    bobs_own = bob.locator('[data-role="user"]').last
    expect(bobs_own).not_to_have_class(re.compile("message--others"))
    from_bob = alice.locator('[data-role="user"]').last
    expect(from_bob).to_have_class(re.compile("message--others"))
    expect(from_bob.locator("[data-author]")).to_have_text("bob")
    from_bob.scroll_into_view_if_needed()
    screenshot(alice, "sharing-owner-sees-the-author")
    for page in (alice, bob):
        expect(page.locator('[data-role="assistant"]').last).to_have_attribute(
            "data-status", "complete", timeout=REPLY_TIMEOUT_MS
        )
    assert last_reply_text(alice) == last_reply_text(bob) != ""
    screenshot(alice, "sharing-owner")
    screenshot(bob, "sharing-participant")

    members = f"/api/threads/{thread_id}/members"
    bob_id = alice_context.request.get(members).json()["members"][0]["user"]["id"]
    csrf = next(cookie["value"] for cookie in alice_context.cookies() if cookie["name"] == "csrftoken")
    made_viewer = alice_context.request.patch(
        f"{members}/{bob_id}", data={"role": "viewer"}, headers={"X-CSRFToken": csrf}
    )
    assert made_viewer.ok
    send(bob, "Can I still write?")
    expect(bob.locator("[data-read-only-note]")).to_be_visible()
    expect(bob.locator("[data-composer]")).to_be_hidden()
    expect(bob.get_by_label("Message")).to_be_hidden()

    removed = alice_context.request.delete(f"{members}/{bob_id}", headers={"X-CSRFToken": csrf})
    assert removed.status == 204
    expect(bob.get_by_text("Your access to this chat ended")).to_be_visible()
    expect(watching(alice, "bob")).to_have_count(0)
    screenshot(bob, "sharing-removed")
    expect_connected(alice)


def test_a_member_leaves_a_shared_thread(open_context):
    """Bob, a viewer, leaves Alice's thread from its page: he is back on his list, without it."""
    alice_context, bob_context = open_context("alice"), open_context("bob")
    thread_id = api_post(alice_context, "/api/threads", {"title": "Leaving soon"})["id"]
    api_post(alice_context, f"/api/threads/{thread_id}/members", {"username": "bob", "role": "viewer"})
    bob = open_thread(bob_context, f"/threads/{thread_id}/")
    expect(bob.get_by_text("Shared by alice · viewer")).to_be_visible()
    bob.get_by_role("button", name="Leave").click()
    expect(bob.get_by_role("heading", name="Your threads")).to_be_visible()
    expect(bob.get_by_text("Leaving soon")).to_have_count(0)
    assert bob_context.request.get(f"/api/threads/{thread_id}").status == 404
