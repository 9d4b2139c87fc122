"""Tools for the agent tests: each run is counted in a file, so runs in any process are counted alike.

A call whose input names a `hold` file waits, once its run is counted, until that file is
gone: a test holds a tool mid-run to stop or kill its worker there.
"""

import asyncio
import os
from pathlib import Path
from typing import Any, Literal

import pytest

from streaming.tools import ToolContext

# Where runs are counted: one line per run, `name reply-id`.
RUNS_FILE_VARIABLE = "CHAT_TEST_TOOL_RUNS"


def runs(path: Path, name: str | None = None) -> list[str]:
    """Return the counted runs (their replies' ids), of the tool `name` if given."""
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [reply_id for tool, reply_id in lines if name is None or tool == name]


class CountingTool:
    description = "Count this call and give back how many runs were counted."
    input_schema = {"type": "object", "properties": {"hold": {"type": "string"}}}

    def __init__(
        self,
        name: str,
        *,
        idempotent: bool = False,
        on_uncertain: Literal["approve", "fail"] = "fail",
        requires_approval: bool = False,
    ) -> None:
        self.name = name
        self.idempotent = idempotent
        self.on_uncertain = on_uncertain
        self.requires_approval = requires_approval

    async def run(self, input: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        path = Path(os.environ[RUNS_FILE_VARIABLE])
        await asyncio.to_thread(self._count, path, context)
        hold = input.get("hold")
        # Polled: the file is removed by another process as often as by this one.
        while hold and await asyncio.to_thread(Path(hold).exists):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return {"runs": len(runs(path, self.name))}

    def _count(self, path: Path, context: ToolContext) -> None:
        with path.open("a") as runs_file:
            runs_file.write(f"{self.name} {context.message_id}\n")


class BrokenTool(CountingTool):
    async def run(self, input: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        await super().run(input, context)
        raise RuntimeError("the tool broke")


counter = CountingTool("counter")
idempotent_counter = CountingTool("idempotent_counter", idempotent=True)
retry_counter = CountingTool("retry_counter", on_uncertain="approve")
guarded_counter = CountingTool("guarded_counter", requires_approval=True)
broken = BrokenTool("broken")

ALL = [
    "tests.agent_tools.counter",
    "tests.agent_tools.idempotent_counter",
    "tests.agent_tools.retry_counter",
    "tests.agent_tools.guarded_counter",
    "tests.agent_tools.broken",
    "threads.tools.calculator",
    "threads.tools.current_time",
    "threads.tools.search_threads",
]


@pytest.fixture
def tool_runs(tmp_path, monkeypatch, settings) -> Path:
    """Offer the counting tools besides the shipped ones, at a quick pace; return the file their runs are counted in."""
    path = tmp_path / "runs.txt"
    monkeypatch.setenv(RUNS_FILE_VARIABLE, str(path))
    settings.CHAT_TOOLS = ALL
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    settings.SCRIPTED_REPLY_TOKENS = 30
    return path
