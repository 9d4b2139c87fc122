"""Agent replies on the thread page, in headless Chromium: thinking folded away, tool cards, the approval card."""

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from .agent_tools import RUNS_FILE_VARIABLE, runs
from .live_server import chat_server  # noqa: F401 - a fixture
from .test_browser import (  # noqa: F401 - browser, open_context and sessions are fixtures
    REPLY_TIMEOUT_MS,
    browser,
    drop_first_frame,
    expect_connected,
    expect_reply_status,
    last_reply,
    new_thread,
    open_context,
    open_thread,
    screenshot,
    send,
    sessions,
    stored,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def agent_tools_offered(tmp_path_factory) -> Iterator[str]:
    """The live server offers a tool that needs approval besides the shipped ones; its runs are counted in a file."""
    runs_file = tmp_path_factory.mktemp("tool-runs") / "runs.txt"
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("CHAT_TOOLS", "tests.agent_tools.guarded_counter,threads.tools.calculator")
        environment.setenv(RUNS_FILE_VARIABLE, str(runs_file))
        yield runs_file


def test_thinking_is_folded_away_and_a_tool_call_is_a_card(open_context):
    """Live and after a reload alike: thinking under a closed summary, the call with its input and result."""
    page = new_thread(open_context())
    send(page, 'What is six times seven?\n/think\n/tool calculator {"expression": "6 * 7"}')
    expect_reply_status(page, "complete")
    reply = stored(page)["messages"][-1]
    result = next(part for part in reply["parts"] if part["type"] == "tool_result")
    for shown in (page, open_thread(page.context, page.url)):  # live, then rendered by the server
        steps = last_reply(shown).locator("[data-steps]")
        thinking = steps.locator("details.step--thinking")
        expect(thinking).to_have_count(2)  # the scripted model thinks before each of its calls
        expect(thinking.first).not_to_have_attribute("open", "")
        expect(thinking.first.locator(".step__text")).to_be_hidden()
        card = steps.locator(".step--tool")
        expect(card).to_have_attribute("data-state", "done")
        expect(card.locator(".step__summary")).to_contain_text("calculator")
        assert json.loads(card.locator(".step__input").inner_text()) == {"expression": "6 * 7"}
        assert json.loads(card.locator(".step__output").inner_text()) == result["output"]
        thinking.first.locator("summary").click()
        expect(thinking.first.locator(".step__text")).to_have_text(reply["parts"][0]["text"])
    screenshot(page, "agent-reply-tool-card")


def test_an_approval_card_works_from_another_tab_once_the_first_is_closed(open_context, agent_tools_offered):
    context = open_context()
    first = new_thread(context)
    second = open_thread(context, first.url)
    send(first, "Count for me.\n/tool guarded_counter {}")
    card = last_reply(second).locator(".step--tool")
    expect(card).to_have_attribute("data-state", "waiting", timeout=REPLY_TIMEOUT_MS)
    expect(card.locator(".step__approval")).to_contain_text("Run this tool?")
    expect(last_reply(second).locator(".message__state--approval")).to_be_visible()
    expect(last_reply(second).locator(".message__state--streaming")).to_be_hidden()
    screenshot(second, "agent-reply-approval-card")
    first.close()
    assert runs(agent_tools_offered, "guarded_counter") == []
    card.get_by_role("button", name="Approve").click()
    expect(card).to_have_attribute("data-state", "done", timeout=REPLY_TIMEOUT_MS)
    expect(card.locator(".step__approval")).to_have_text("Approved")
    assert json.loads(card.locator(".step__output").inner_text()) == {"runs": 1}
    expect_reply_status(second, "complete")
    assert len(runs(agent_tools_offered, "guarded_counter")) == 1


def test_a_denied_call_shows_as_denied(open_context, agent_tools_offered):
    before = len(runs(agent_tools_offered, "guarded_counter"))
    page = new_thread(open_context())
    send(page, "Count for me.\n/tool guarded_counter {}")
    card = last_reply(page).locator(".step--tool")
    card.get_by_role("button", name="Deny").click()
    expect(card.locator(".step__approval")).to_have_text("Denied")
    expect(card).to_have_attribute("data-state", "failed", timeout=REPLY_TIMEOUT_MS)
    expect_reply_status(page, "complete")
    assert len(runs(agent_tools_offered, "guarded_counter")) == before


def test_a_decision_whose_socket_drops_before_the_server_hears_it_is_sent_again(open_context, agent_tools_offered):
    """An Approve lost with its socket is sent again once reconnected: the call runs once and the reply completes."""
    page = new_thread(open_context())
    dropped: list[str] = []
    page.route_web_socket(re.compile(r"/ws/threads/"), drop_first_frame("approve", dropped))
    page.reload()
    expect_connected(page)
    send(page, "Count for me.\n/tool guarded_counter {}")
    card = last_reply(page).locator(".step--tool")
    expect(card).to_have_attribute("data-state", "waiting", timeout=REPLY_TIMEOUT_MS)
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnected")
    expect(card).to_have_attribute("data-state", "done", timeout=REPLY_TIMEOUT_MS)
    expect(card.locator(".step__approval")).to_have_text("Approved")
    expect_reply_status(page, "complete")
    assert len(dropped) == 1
    reply_id = last_reply(page).get_attribute("data-message-id")
    assert runs(agent_tools_offered, "guarded_counter").count(reply_id) == 1
    expect(page.locator("[data-notice]")).to_be_hidden()


def test_a_refused_decision_gives_the_card_its_buttons_back(open_context):
    """An Approve the server refuses (decided in another tab, not yet seen here) shows why and can be given again."""
    context = open_context()
    first = new_thread(context)
    second = open_thread(context, first.url)
    held: list[bool] = []

    def hold_log_events(route) -> None:
        server = route.connect_to_server()
        route.on_message(server.send)
        # Once held, the page hears only its error frames: the other tab's decision does not reach it.
        server.on_message(lambda frame: route.send(frame) if not held or '"type":"error"' in frame else None)

    second.route_web_socket(re.compile(r"/ws/threads/"), hold_log_events)
    second.reload()
    expect_connected(second)
    send(first, "Count for me.\n/tool guarded_counter {}")
    waiting = [last_reply(page).locator(".step--tool") for page in (first, second)]
    for card in waiting:
        expect(card).to_have_attribute("data-state", "waiting", timeout=REPLY_TIMEOUT_MS)
    held.append(True)
    waiting[0].get_by_role("button", name="Deny").click()
    expect(waiting[0]).to_have_attribute("data-state", "failed", timeout=REPLY_TIMEOUT_MS)
    approve = waiting[1].get_by_role("button", name="Approve")
    approve.click()
    expect(second.locator("[data-notice]")).to_contain_text("waiting for an approval")
    expect(approve).to_be_enabled()
    expect(waiting[1].get_by_role("button", name="Deny")).to_be_enabled()
    screenshot(second, "agent-reply-approval-refused")
