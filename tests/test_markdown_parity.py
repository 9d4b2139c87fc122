"""Markdown reads the same live and reloaded: the page's renderer in Chromium against the server's filter.

Every sample of tests/markdown/corpus.json (finished Markdown, unsafe Markdown, and Markdown
cut off as it stands mid-stream) is rendered by the server's `markdown` filter and by
static/chat/markdown.js, loaded by a page of the live server. The two must be the same
HTML, byte for byte, with no normalisation: both serialise the DOM of the same parse.
So must every text a scripted reply passes through while it streams, and the two
sanitisers given hostile HTML directly.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from streaming.providers.base import Turn
from streaming.providers.scripted import scripted_reply
from threads.templatetags.chat import render_markdown, sanitise_html

from .live_server import LiveServer, chat_server  # noqa: F401 - chat_server is a fixture
from .test_browser import (  # noqa: F401 - browser is a fixture
    EXECUTABLE_IN_MESSAGES,
    browser,
    expect_reply_status,
    last_reply,
    new_thread,
    open_context,
    send,
    sessions,
)

pytestmark = pytest.mark.browser

CORPUS = json.loads((Path(__file__).parent / "markdown" / "corpus.json").read_text())
MINIMUM_SAMPLES = 50
# Long enough for every kind of block the scripted provider writes.
STREAMED_TOKENS = 120

# HTML that markdown-it never writes (it escapes raw HTML) but the second wall must still stop.
HOSTILE_HTML = [
    "<script>alert(1)</script>text<style>p { color: red }</style>",
    "<img src=x onerror=alert(1)><iframe src=x></iframe><object data=x></object>after",
    '<a href="javascript:alert(1)" onclick="alert(1)">js</a> <a href="  JAVASCRIPT:alert(1)">upper</a>',
    '<a href="https://example.com" title="t &amp; &lt;q&gt;" target="_self" rel="opener">ok</a>',
    '<a href="/relative">r</a> <a href="//example.com">p</a> <a href="mailto:a@example.com">m</a> <a href="ftp://x">f</a>',
    '<a href="data:text/html,x">d</a> <a href="vbscript:x">v</a> <a>none</a>',
    "<div><p>nested <span>unwrapped</span> <b>bold</b> <u>under</u></p></div>",
    "<svg><script>alert(1)</script><circle/></svg><math><mi>m</mi></math>",
    '<pre><code class="language-python">x</code></pre><code class="language-js evil">y</code><code class="x">z</code>',
    '<table><tr><th style="text-align:left;color:red">a</th><td style="text-align:center">b</td>'
    '<td style="color:red">c</td></tr></table>',
    '<ol start="3" type="a" reversed><li value="9">x</li></ol>',
    "<!-- comment --><p>x</p><![CDATA[y]]>",
    "<p>&amp; &lt; &gt; \" ' \u00a0 &copy;</p>",
    '<form action="/x"><input name="a"><button formaction="javascript:x">b</button></form>',
    '<p style="position:fixed" class="c" id="i" data-x="1">attrs</p>',
]

BROWSER_RENDER = """async ([texts, html]) => {
    const { markdownToHTML, sanitiseHTML } = await import("/static/chat/markdown.js");
    return [texts.map(markdownToHTML), html.map(sanitiseHTML)];
}"""


@pytest.fixture(scope="module")
def module_page(browser: Browser, chat_server: LiveServer) -> Iterator[Page]:
    """Open a page of the live server to run the page's own modules in; fail on any script error."""
    context = browser.new_context(base_url=chat_server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/accounts/login/")
    yield page
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def rendered_in_browser(module_page: Page) -> tuple[list[str], list[str]]:
    """Render every sample, and sanitise every piece of hostile HTML, with the page's own module."""
    return module_page.evaluate(BROWSER_RENDER, [[sample["text"] for sample in CORPUS], HOSTILE_HTML])


def test_corpus_covers_what_replies_contain():
    """The corpus is large, its names unique, and it holds mid-stream cut-offs and raw HTML."""
    names = [sample["name"] for sample in CORPUS]
    assert len(names) >= MINIMUM_SAMPLES and len(set(names)) == len(names)
    assert sum(name.startswith("partial:") for name in names) >= 10
    assert any("<script>" in sample["text"] for sample in CORPUS)


@pytest.mark.parametrize("index", range(len(CORPUS)), ids=[sample["name"] for sample in CORPUS])
def test_browser_renders_as_the_server(index: int, rendered_in_browser):
    """The page's renderer gives the server's HTML for the sample."""
    markdown, _ = rendered_in_browser
    assert markdown[index] == render_markdown(CORPUS[index]["text"])


@pytest.mark.parametrize("index", range(len(HOSTILE_HTML)))
def test_browser_sanitises_as_the_server(index: int, rendered_in_browser):
    """The page's allow-list leaves of hostile HTML what the server's nh3 leaves."""
    _, sanitised = rendered_in_browser
    assert sanitised[index] == sanitise_html(HOSTILE_HTML[index])


def test_every_moment_of_a_streaming_reply_renders_as_the_server(module_page: Page):
    """Each text a scripted reply passes through, cut at every character, renders in the page as on the server."""
    reply = scripted_reply([Turn("user", "Walk me through it")], STREAMED_TOKENS)
    moments = [reply[:length] for length in range(1, len(reply) + 1)]
    markdown, _ = module_page.evaluate(BROWSER_RENDER, [moments, []])
    assert [moment for moment, html in zip(moments, markdown, strict=True) if html != render_markdown(moment)] == []


# --- A streamed reply, then the same reply reloaded -------------------------------------


def reply_body(page: Page) -> str:
    """Return the HTML of the last reply's body as the page holds it (code blocks decorated)."""
    return last_reply(page).locator("[data-body]").evaluate("(body) => body.innerHTML")


def test_streamed_reply_is_the_reloaded_reply(open_context):
    """A reply with lists, a table and code has the same DOM as it streamed in and after a reload."""
    page = new_thread(open_context())
    send(page, "Show me a plan")
    expect_reply_status(page, "complete")
    live = reply_body(page)
    for shape in (
        r"<ol>.*<ul>",
        r"<table>",
        r'<div class="code-block">.*<code class="language-\w+ hljs">.*<span class="hljs-',
    ):
        assert re.search(shape, live, re.S), f"the scripted reply lacks {shape!r}"
    page.reload()
    expect(last_reply(page).locator(".code-block__copy")).to_be_visible()
    assert reply_body(page) == live
    assert page.evaluate(EXECUTABLE_IN_MESSAGES) == []
