"""Durable steps against SIGKILL: a worker killed between an agent reply's steps, in the scale-out topology.

Real processes on loopback, as in tests/test_chaos.py: a daphne web process and two stream
workers on a database of their own and Redis under a prefix of their own. The counting tools
(tests/agent_tools.py) count each run in a file, whichever process runs them: a worker is
killed while a tool runs (its call committed, its result not) or just after a result was
committed, and the tools must have run exactly as often as the rules of durable steps say.
"""

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply

from .agent_tools import RUNS_FILE_VARIABLE, runs
from .chaos_cluster import (
    ARTIFACTS_DIR,
    ChaosClient,
    ChaosDatabase,
    Cluster,
    Services,
    async_wait_until,
    chaos_environment,
    migrate,
    sign_in,
    with_database,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(150)]

DATABASE_NAME = "chatsite_agent_chaos"
REPLY_TOKENS = 60
TOKENS_PER_SECOND = 40  # the reply's text streams for 1.5 s: time to kill its worker mid-way
LEASE_SECONDS = 2  # takeovers after a SIGKILL come quickly
TIMEOUT_SECONDS = 60


@dataclass
class Agents:
    cluster: Cluster
    database_url: str
    cookie: str
    threads: Iterator[str]
    runs_file: Path
    hold: Path


@pytest.fixture(scope="module")
def agents(tmp_path_factory) -> Iterator[Agents]:
    """Start one web process and two workers offering the counting tools, on a fresh database."""
    server_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
    Services(database_url=server_url, redis_url=redis_url).ensure_running()
    admin_url = with_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE_NAME}")
    directory = tmp_path_factory.mktemp("agent-chaos")
    database_url = with_database(server_url, DATABASE_NAME)
    environment = chaos_environment(
        database_url=database_url,
        redis_url=redis_url,
        prefix=f"agent-chaos-{uuid.uuid4().hex[:8]}",
        SCRIPTED_TOKENS_PER_SECOND=str(TOKENS_PER_SECOND),
        SCRIPTED_REPLY_TOKENS=str(REPLY_TOKENS),
        GENERATION_LEASE_SECONDS=str(LEASE_SECONDS),
        GENERATION_MAX_ATTEMPTS="10",
        STREAM_WORKER_POLL_SECONDS="0.5",
        CHAT_SENDS_PER_MINUTE="100000",
        CHAT_TOOLS="tests.agent_tools.counter,tests.agent_tools.idempotent_counter",
        **{RUNS_FILE_VARIABLE: str(directory / "runs.txt")},
    )
    log_dir = ARTIFACTS_DIR / "agent-chaos"
    log_dir.mkdir(parents=True, exist_ok=True)
    migrate(environment)
    cookie, threads = sign_in(environment, threads=8)
    cluster = Cluster(environment=environment, log_dir=log_dir, webs=1, workers=2)
    try:
        cluster.start()
        yield Agents(cluster, database_url, cookie, iter(threads), directory / "runs.txt", directory / "hold")
    finally:
        cluster.stop()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")


@pytest.fixture
async def client(agents: Agents) -> AsyncIterator[ChaosClient]:
    client = ChaosClient(thread_id=next(agents.threads), cookie=agents.cookie, ports=agents.cluster.ports)
    await client.start()
    yield client
    await client.stop()
    for slot, worker in enumerate(agents.cluster.workers):
        if worker is None or worker.popen.poll() is not None:
            agents.cluster.start_worker(slot, wait=False)
    agents.cluster.wait_ready()


async def ask(client: ChaosClient, content: str) -> str:
    """Send `content`; return the id of its reply."""
    await client.send({"type": "send", "content": content, "client_id": str(uuid.uuid4())})
    start = await client.wait_for(
        lambda: next((event for event in client.events if event["type"] == "start"), None), 10, "the reply's start"
    )
    return start["message"]["id"]


async def kill_the_worker_of(agents: Agents, reply_id: str) -> None:
    """SIGKILL the worker writing `reply_id`, and start another in its slot."""
    database = ChaosDatabase(agents.database_url)
    try:
        name = await database.value("SELECT worker FROM streaming_generation WHERE message_id = %s", reply_id)
    finally:
        await database.close()
    slot = agents.cluster.worker_slot(name)
    assert slot is not None, f"the reply's worker {name!r} is not running"
    exit_code = await asyncio.to_thread(agents.cluster.stop_process, agents.cluster.workers[slot], signal.SIGKILL)
    assert exit_code == -signal.SIGKILL
    await asyncio.to_thread(agents.cluster.start_worker, slot, wait=False)


def part(client: ChaosClient, type_: str, **fields: object) -> dict | None:
    """The first part event whose part has this type (and these fields)."""
    for event in client.events:
        found = event.get("part", {})
        if found.get("type") == type_ and all(found.get(name) == value for name, value in fields.items()):
            return event
    return None


@pytest.mark.parametrize(
    ("tool", "status", "expected_runs"),
    [
        ("counter", "failed", 1),  # not idempotent: it may have had its effect, so it does not run again
        ("idempotent_counter", "complete", 2),  # idempotent: run again
    ],
)
async def test_sigkill_between_a_tool_call_and_its_result(agents, client, tool, status, expected_runs):
    before = len(runs(agents.runs_file, tool))
    agents.hold.touch()
    reply_id = await ask(client, f'Count.\n/tool {tool} {{"hold": "{agents.hold}"}}')
    await client.wait_for(lambda: part(client, "tool_call", state="running"), 10, "the run to begin")
    await async_wait_until(lambda: len(runs(agents.runs_file, tool)) > before, 10, "the tool to count its run")
    await kill_the_worker_of(agents, reply_id)
    agents.hold.unlink()
    end = await client.wait_for(lambda: client.end_of(reply_id), TIMEOUT_SECONDS, "the reply's end")
    assert end["status"] == status
    if status == "failed":
        assert end["error"]["code"] == "tool_uncertain"
    assert len(runs(agents.runs_file, tool)) - before == expected_runs
    # A result only when the call ran again to completion.
    assert (part(client, "tool_result") is not None) == (status == "complete")


async def test_sigkill_between_a_result_and_the_next_model_call(agents, client):
    """The result was committed: taken over, the reply goes on from its text and never runs the tool again."""
    before = len(runs(agents.runs_file, "counter"))
    content = "Count once.\n/tool counter {}"
    reply_id = await ask(client, content)
    result = await client.wait_for(lambda: part(client, "tool_result"), 10, "the tool's result")
    await client.wait_for(
        lambda: any(event["type"] == "delta" and event["seq"] > result["seq"] for event in client.events),
        10,
        "the next model call's first text",
    )
    await kill_the_worker_of(agents, reply_id)
    end = await client.wait_for(lambda: client.end_of(reply_id), TIMEOUT_SECONDS, "the reply's end")
    assert end["status"] == "complete"
    assert len(runs(agents.runs_file, "counter")) - before == 1
    output = result["part"]["output"]
    expected = f'Tool counter gave {{"runs": {output["runs"]}}}.\n\n' + scripted_reply(
        [Turn("user", content)], REPLY_TOKENS
    )
    assert client.text_of(reply_id) == expected
    seqs = [event["seq"] for event in client.events]
    assert seqs == sorted(set(seqs)), "every event once, in order"
