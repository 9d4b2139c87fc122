"""The rules of durable tool steps, as one table: what happens to a logged call without a result."""

import pytest

from streaming.tools import DENIED, tool_calls_plan

from .agent_tools import CountingTool

TOOLS = {
    "plain": CountingTool("plain"),
    "idempotent": CountingTool("idempotent", idempotent=True),
    "ask_to_retry": CountingTool("ask_to_retry", on_uncertain="approve"),
    "guarded": CountingTool("guarded", requires_approval=True),
    "guarded_idempotent": CountingTool("guarded_idempotent", requires_approval=True, idempotent=True),
}


def call(name: str, state: str = "called") -> dict:
    return {"type": "tool_call", "id": f"call-{name}", "name": name, "input": {}, "state": state}


def approval(name: str, state: str, retry: bool = False) -> dict:
    return {"type": "approval", "tool_call_id": f"call-{name}", "state": state, "retry": retry}


def outcome(parts: list[dict]) -> str:
    plan = tool_calls_plan(parts, TOOLS)
    if plan.cannot_rerun is not None:
        return "fail"
    if plan.runs:
        return "run"
    if plan.refused:
        return "denied" if plan.refused[0][1] == DENIED else "refused"
    if plan.asks:
        return "ask again" if plan.asks[0][1] else "ask"
    return "nothing"


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        # Never begun: it runs (after its approval, for a tool that requires one).
        ([call("plain")], "run"),
        ([call("guarded")], "ask"),
        ([call("guarded"), approval("guarded", "approved")], "run"),
        ([call("guarded"), approval("guarded", "denied")], "denied"),
        # Begun in an earlier attempt, no result: it may have had its effect.
        ([call("plain", "running")], "fail"),
        ([call("idempotent", "running")], "run"),
        ([call("ask_to_retry", "running")], "ask again"),
        ([call("ask_to_retry", "running"), approval("ask_to_retry", "approved", retry=True)], "run"),
        ([call("ask_to_retry", "running"), approval("ask_to_retry", "denied", retry=True)], "denied"),
        # Approved once, then cut off mid-run: the first approval does not cover running it again.
        ([call("guarded", "running"), approval("guarded", "approved")], "fail"),
        ([call("guarded_idempotent", "running"), approval("guarded_idempotent", "approved")], "run"),
        # A result was committed: never run again.
        (
            [
                call("plain", "running"),
                {"type": "tool_result", "tool_call_id": "call-plain", "name": "plain", "output": 1, "is_error": False},
            ],
            "nothing",
        ),
        ([call("gone")], "refused"),
    ],
)
def test_a_logged_call_without_a_result(parts, expected):
    assert outcome(parts) == expected
