"""`search_threads`: find the calling person's messages containing some text, in their own threads."""

from typing import Any

from channels.db import database_sync_to_async

from streaming.tools import ToolContext

from ..models import Message
from .base import ProductTool, text_input, tool_person_id

MAX_RESULTS = 10
EXCERPT_CHARS = 200


class SearchThreads(ProductTool):
    name = "search_threads"
    description = "Search the person's own chat threads for messages containing the query (case-insensitive)."
    input_schema = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "the text to look for"}},
        "required": ["query"],
    }

    async def run(self, input: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        query = text_input(input, "query", max_chars=200)
        return {"query": query, "results": await _search(query=query, context=context)}


@database_sync_to_async
def _search(*, query: str, context: ToolContext) -> list[dict[str, str]]:
    """The newest matches in threads the person owns, leaving out the question being answered."""
    matches = (
        Message.objects.filter(thread__owner_id=tool_person_id(context), content__icontains=query)
        .exclude(pk__in=[context.message_id, context.user_message_id])
        .select_related("thread")
        .order_by("-created_at")[:MAX_RESULTS]
    )
    return [
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
