"""What the shipped tools have in common, and whom a tool runs for."""

from typing import Any, Literal

from streaming.tools import ToolContext

from ..models import Thread


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


def tool_person_id(context: ToolContext) -> int:
    """Return the id of the person a tool runs for: the one who may write the thread and asked."""
    return Thread.objects.values_list("owner_id", flat=True).get(pk=context.thread_id)
