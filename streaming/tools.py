"""Tools the model may call, chosen by the CHAT_TOOLS setting (dotted paths to tool objects).

A tool is any object with the attributes of `Tool`. The engine runs it for the reply being
written and logs its call and result as durable steps (`streaming.runner`): a result that
was committed is never produced again. A call whose run began but whose result was not
committed when its worker died may have had its effect already: it is run again only if the
tool is `idempotent`; otherwise, as its `on_uncertain` says, a person is asked to approve
running it again, or the reply fails with `tool_uncertain`.
"""

import functools
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from uuid import UUID

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .providers import ToolSpec


@dataclass(frozen=True)
class ToolContext:
    """Whom and what a tool runs for: it may read only what the thread's writer may read."""

    thread_id: UUID
    # The reply the call belongs to, and the person's message it answers.
    message_id: UUID
    user_message_id: UUID | None


class Tool(Protocol):
    name: str
    description: str
    # A JSON schema of the call's input (an object).
    input_schema: dict[str, Any]
    # Each call waits for a person's approval before it runs.
    requires_approval: bool
    # Running a call twice has the effect of running it once.
    idempotent: bool
    # What to do with a call that may have run when its worker died, for a tool not idempotent.
    on_uncertain: Literal["approve", "fail"]

    async def run(self, input: dict[str, Any], context: ToolContext) -> Any:
        """Return the result (JSON-serialisable), or raise: the error's message is the result, marked as an error."""
        ...


@functools.cache
def get_tools() -> dict[str, Tool]:
    """Return the configured tools by name."""
    tools: dict[str, Tool] = {}
    for path in settings.CHAT_TOOLS:
        tool = import_string(path)
        tools[tool.name] = tool
    return tools


def tool_specs() -> list[ToolSpec]:
    return [
        ToolSpec(name=tool.name, description=tool.description, input_schema=tool.input_schema)
        for tool in get_tools().values()
    ]


@receiver(setting_changed)
def _reset_tools(*, setting: str, **kwargs) -> None:
    if setting == "CHAT_TOOLS":
        get_tools.cache_clear()
