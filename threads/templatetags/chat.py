"""Filters of the chat pages: `markdown` renders untrusted message text as safe HTML; `moment` and `ago` say when."""

import functools
import json
import re
from datetime import datetime, timedelta

import nh3
from django import template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from markdown_it import MarkdownIt

register = template.Library()

# static/chat/markdown.js applies the same lists in the browser; tests/test_markdown_parity.py holds them equal.
ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}
# A table column's alignment is the only style a message may carry, in markdown-it's own spelling.
ALIGNMENTS = {"style": {f"text-align:{side}" for side in ("left", "center", "right")}}
ALIGNED_CELLS = {"th": ALIGNMENTS, "td": ALIGNMENTS}
# A fenced block's language, as markdown-it names it from the fence's info string; the page
# labels and highlights the block by it. static/chat/markdown.js keeps the same pattern.
LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,32}")
URL_SCHEMES = {"http", "https", "mailto"}
JUST_NOW = timedelta(minutes=1)


@functools.cache
def markdown_parser() -> MarkdownIt:
    # Raw HTML is escaped, never passed through; images are off (no remote fetches from
    # a message). `breaks` keeps the line breaks people type, as the browser renderer does.
    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"]).disable("image")


def render_markdown(text: str) -> str:
    """Return `text` as HTML: markdown-it without raw HTML, then nh3 as a second, independent wall."""
    return sanitise_html(markdown_parser().render(text))


def sanitise_html(html: str) -> str:
    """Return `html` with only the allowed tags, attributes and URL schemes; links open in a new tab."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        tag_attribute_values=ALIGNED_CELLS,
        attribute_filter=_language_class_only,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


def _language_class_only(tag: str, attribute: str, value: str) -> str | None:
    """Keep a code element's class only when it is one language name; pass other attributes through."""
    if tag == "code" and attribute == "class":
        return value if LANGUAGE_CLASS.fullmatch(value) else None
    return value


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return mark_safe(render_markdown(text or ""))  # noqa: S308 - sanitised by nh3 above


@register.filter
def moment(value: datetime | str | None) -> datetime | None:
    """Return a datetime for a datetime or the ISO string of an event payload; None for none."""
    if not value:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


@register.filter
def ago(moment: datetime | None) -> str:
    """Return "just now" or "5 minutes ago", as the page script's relative times read."""
    if moment is None:
        return ""
    if timezone.now() - moment < JUST_NOW:
        return "just now"
    return f"{timesince(moment, depth=1)} ago"


@register.filter
def as_json(value: object) -> str:
    """Return a value as JSON text, for a data attribute the page script reads (escaped there like any text)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
