"""What the shipped tools have in common, and who reads what a tool gives.

A tool's result is logged in the thread, so everyone who may read the thread reads it
(I11): a tool brings in only what all of them may read already.
"""

from typing import Any, Literal

from django.db.models import Exists, OuterRef

from streaming.tools import ToolContext

from ..access import live_links
from ..models import Membership, ShareLink, Thread


class ProductTool:
    """A tool of `streaming.tools.Tool`'s shape; these read only, so each may run again safely."""

    name: str
    description: str
    input_schema: dict[str, Any]
    requires_approval = False
    idempotent = True
    on_uncertain: Literal["approve", "fail"] = "fail"

    async def run(self, input: dict[str, Any], context: ToolContext) -> Any:
        raise NotImplementedError


class ToolInputError(Exception):
    """The call's input is not what the tool takes: the model is told why."""


def text_input(input: dict[str, Any], name: str, *, max_chars: int) -> str:
    value = input.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolInputError(f"`{name}` must be a non-empty string.")
    if len(value) > max_chars:
        raise ToolInputError(f"`{name}` must be at most {max_chars} characters.")
    return value


def tool_thread_owner_id(context: ToolContext) -> int:
    """Return the id of the owner of the thread the tool runs in, who is not always the person who asked."""
    return Thread.objects.values_list("owner_id", flat=True).get(pk=context.thread_id)


def tool_thread_is_private(context: ToolContext) -> bool:
    """Return whether the thread the tool runs in is readable by its owner alone: no member, no live share link."""
    members = Membership.objects.filter(thread=OuterRef("pk"))
    links = ShareLink.objects.filter(live_links(), thread=OuterRef("pk"))
    return Thread.objects.filter(~Exists(members), ~Exists(links), pk=context.thread_id).exists()
