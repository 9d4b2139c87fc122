"""`search_threads`: find messages containing some text, in the owner's threads or, once shared, in this one.

Its result is logged in the thread, read by everyone the thread is shared with (I11):
while the thread is the owner's alone it searches all the owner's threads; once it has
a member or a live share link, only its own messages, which all its readers read already.
"""

from enum import StrEnum
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Q

from streaming.tools import ToolContext

from ..models import Message
from .base import ProductTool, text_input, tool_thread_is_private, tool_thread_owner_id

MAX_RESULTS = 10
EXCERPT_CHARS = 200


class Scope(StrEnum):
    """Which messages a search covered: the result says so, for the model to tell the person."""

    OWNER_THREADS = "owner_threads"
    THIS_THREAD = "this_thread"


class SearchThreads(ProductTool):
    name = "search_threads"
    description = (
        "Search chat messages for the query (case-insensitive), newest first. In a thread only its owner reads, "
        "this searches all the owner's threads (scope owner_threads). In a thread shared with others (members or "
        "a share link) it searches only this thread's messages (scope this_thread), since everyone who reads the "
        "thread reads the result: tell the person that their other threads were not searched."
    )
    input_schema = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "the text to look for"}},
        "required": ["query"],
    }

    async def run(self, input: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        query = text_input(input, "query", max_chars=200)
        scope, results = await _search(query=query, context=context)
        return {"query": query, "scope": scope.value, "results": results}


@database_sync_to_async
def _search(*, query: str, context: ToolContext) -> tuple[Scope, list[dict[str, str]]]:
    """Return the scope searched and its newest matches, leaving out the question being answered and the reply."""
    if tool_thread_is_private(context):
        scope, within = Scope.OWNER_THREADS, Q(thread__owner_id=tool_thread_owner_id(context))
    else:
        scope, within = Scope.THIS_THREAD, Q(thread_id=context.thread_id)
    matches = (
        Message.objects.filter(within, content__icontains=query)
        .exclude(pk__in=[context.message_id, context.user_message_id])
        .select_related("thread")
        .order_by("-created_at")[:MAX_RESULTS]
    )
    return scope, [
        {
            "thread_id": str(message.thread_id),
            "thread_title": message.thread.title,
            "role": message.role,
            "excerpt": _excerpt(message.content, query),
            "created_at": message.created_at.isoformat(),
        }
        for message in matches
    ]


def _excerpt(content: str, query: str) -> str:
    """Return the text around the first match, at most EXCERPT_CHARS long."""
    at = content.lower().find(query.lower())
    start = max(0, at - (EXCERPT_CHARS - len(query)) // 2)
    excerpt = content[start : start + EXCERPT_CHARS]
    return ("…" if start else "") + excerpt + ("…" if start + EXCERPT_CHARS < len(content) else "")


search_threads = SearchThreads()
