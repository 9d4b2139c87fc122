"""Tools the model may call, chosen by the CHAT_TOOLS setting (dotted paths to tool objects).

A tool is any object with the attributes of `Tool`. The engine runs it for the reply being
written and logs its call and result as durable steps (`streaming.runner`): a result that
was committed is never produced again. A call whose run began but whose result was not
committed when its worker died may have had its effect already: it is run again only if the
tool is `idempotent`; otherwise, as its `on_uncertain` says, a person is asked to approve
running it again, or the reply fails with `tool_uncertain`.
"""

import functools
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .parts import tool_calls, tool_results
from .protocol import ApprovalPart, Part, ToolCallPart
from .providers import ToolSpec

# What the model is told of a call a person denied.
DENIED = "A person denied this tool call."


@dataclass(frozen=True)
class ToolContext:
    """Where a tool runs.

    Its result is logged in the thread, so it brings in only what every reader of the thread may read.
    """

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


@dataclass
class ToolCallsPlan:
    """What to do with a reply's logged tool calls that have no result yet."""

    # Run now: their run never began, or may run again.
    runs: list[ToolCallPart] = field(default_factory=list)
    # Answered without running, with why: denied, or naming no tool.
    refused: list[tuple[ToolCallPart, str]] = field(default_factory=list)
    # Ask a person first; True for a call that may have run already (its approval is to run it again).
    asks: list[tuple[ToolCallPart, bool]] = field(default_factory=list)
    # A call that may have run already and whose tool says to fail rather than run it again.
    cannot_rerun: ToolCallPart | None = None


def tool_calls_plan(parts: list[Part], tools: dict[str, Tool]) -> ToolCallsPlan:
    """Decide, for each tool call of `parts` without a result, whether it runs, is refused or waits for a person.

    A call logged `running` began its run in an earlier attempt and left no result: it may
    have had its effect, so it runs again only if its tool is idempotent, else as the tool's
    `on_uncertain` says. A call of a tool that requires approval runs once approved.
    """
    results = tool_results(parts)
    # The latest approval of each call: a call asked about again (to run it again) has two.
    approvals: dict[str, ApprovalPart] = {part["tool_call_id"]: part for part in parts if part["type"] == "approval"}
    plan = ToolCallsPlan()
    for call in tool_calls(parts):
        if call["id"] in results:
            continue
        tool, approval = tools.get(call["name"]), approvals.get(call["id"])
        uncertain = call["state"] == "running"
        if tool is None:
            plan.refused.append((call, f"There is no tool named {call['name']!r}."))
        elif uncertain and not tool.idempotent:
            decided = approval["state"] if approval is not None and approval["retry"] else None
            if decided == "approved":
                plan.runs.append(call)
            elif decided == "denied":
                plan.refused.append((call, DENIED))
            elif tool.on_uncertain == "approve":
                plan.asks.append((call, True))
            else:
                plan.cannot_rerun = call
                return plan
        elif tool.requires_approval and not uncertain and (approval is None or approval["state"] == "requested"):
            plan.asks.append((call, False))
        elif tool.requires_approval and not uncertain and approval is not None and approval["state"] == "denied":
            plan.refused.append((call, DENIED))
        else:
            plan.runs.append(call)
    return plan
