"""The scripted provider: exact token counts, the same reply for the same conversation, and rich Markdown."""

import re

import pytest

from streaming.providers.base import Turn
from streaming.providers.scripted import scripted_reply, scripted_reply_tokens
from threads.templatetags.chat import render_markdown

CONVERSATION = [Turn("user", "Walk me through the setup")]


@pytest.mark.parametrize("length", [1, 2, 5, 17, 40, 80, 120, 333, 1000])
def test_reply_has_exactly_the_tokens_asked_for(length):
    """SCRIPTED_REPLY_TOKENS is the number of pieces streamed, whatever blocks fit in it."""
    tokens = scripted_reply_tokens(CONVERSATION, length)
    assert len(tokens) == length and all(token.strip() for token in tokens)


def test_reply_is_the_same_for_the_same_conversation_only():
    """The reply depends on the conversation alone: the same turns give it again, others do not."""
    assert scripted_reply(CONVERSATION, 120) == scripted_reply(list(CONVERSATION), 120)
    assert scripted_reply(CONVERSATION, 120) != scripted_reply([Turn("user", "Something else")], 120)


def test_reply_shows_what_the_page_renders():
    """A reply of the default length has a heading, a numbered list with sub-lists, a table, code and inline markup."""
    html = render_markdown(scripted_reply(CONVERSATION, 120))
    for shape in (
        r"<h2>",
        r"<ol>\s*<li><strong>\w+</strong>[^<]*<ul>",
        r"<table>.*<td",
        r'<pre><code class="language-(python|javascript|bash|sql)">',
        r"<em>",
        r"<code>\w+\(\)</code>",
        r'<a href="https://example.com/\w+"',
    ):
        assert re.search(shape, html, re.S), shape


def test_a_short_reply_ends_in_a_finished_sentence():
    """When the blocks do not fit, prose fills the rest and the reply ends with a full stop."""
    assert scripted_reply(CONVERSATION, 30).endswith(".")
