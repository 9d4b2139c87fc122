"""Chaos: the scale-out topology keeps its invariants while processes and services fail (I3, I8, I9).

Real processes on loopback: two daphne web processes and two stream workers, started from
the Procfile's commands as `runcluster` starts them, on a database of their own and on Redis
under a prefix of their own. Clients are real WebSocket clients on both web processes. Each
scenario prints a one-line summary and appends it to test-artifacts/chaos-summary.txt.
"""

import asyncio
import contextlib
import os
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import psycopg
import pytest
import redis

from streaming.events import WORKERS_GROUP
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply

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

DATABASE_NAME = "chatsite_chaos"
REPLY_TOKENS = 150
TOKENS_PER_SECOND = 100  # a reply streams for 1.5 s
LEASE_SECONDS = 2  # takeovers after a SIGKILL come quickly
LONG_LEASE_SECONDS = 30  # long enough that a handover faster than it cannot be an expiry
POLL_SECONDS = 0.5
SUMMARY_PATH = ARTIFACTS_DIR / "chaos-summary.txt"
REPLY_TIMEOUT_SECONDS = 60


@dataclass
class Chaos:
    services: Services
    cluster: Cluster
    database_url: str
    redis_url: str
    prefix: str
    cookie: str
    threads: Iterator[str]

    def report(self, scenario: str, **figures: object) -> None:
        """Print the scenario's one-line summary and keep it in the artifacts."""
        line = f"chaos {scenario}: " + " ".join(f"{name}={value}" for name, value in figures.items())
        print(f"\n{line}")
        with SUMMARY_PATH.open("a") as summary:
            summary.write(line + "\n")


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    """Start the cluster on a fresh database; stop it and drop the database after."""
    server_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
    services = Services(database_url=server_url, redis_url=redis_url)
    services.ensure_running()
    admin_url = with_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE_NAME}")
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    database_url = with_database(server_url, DATABASE_NAME)
    environment = chaos_environment(
        database_url=database_url,
        redis_url=redis_url,
        prefix=prefix,
        SCRIPTED_TOKENS_PER_SECOND=str(TOKENS_PER_SECOND),
        SCRIPTED_REPLY_TOKENS=str(REPLY_TOKENS),
        GENERATION_LEASE_SECONDS=str(LEASE_SECONDS),
        # Scenario 1 kills one reply's worker many times: it must not run out of attempts.
        GENERATION_MAX_ATTEMPTS="50",
        STREAM_WORKER_POLL_SECONDS=str(POLL_SECONDS),
        # One person sends every scenario's messages.
        CHAT_SENDS_PER_MINUTE="100000",
    )
    log_dir = ARTIFACTS_DIR / "chaos"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old_log in log_dir.glob("*.log"):
        old_log.unlink()
    SUMMARY_PATH.write_text("")
    migrate(environment)
    cookie, threads = sign_in(environment, threads=32)
    cluster = Cluster(environment=environment, log_dir=log_dir)
    try:
        cluster.start()
        yield Chaos(services, cluster, database_url, redis_url, prefix, cookie, iter(threads))
    finally:
        cluster.stop()
        services.ensure_running()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")


@pytest.fixture
async def chaos_db(chaos: Chaos) -> AsyncIterator[ChaosDatabase]:
    database = ChaosDatabase(chaos.database_url)
    yield database
    await database.close()


@pytest.fixture(autouse=True)
def restored(chaos: Chaos) -> Iterator[None]:
    """Leave the services running and every cluster process alive after each scenario, even a failed one."""
    yield
    chaos.services.ensure_running()
    for index, web in enumerate(chaos.cluster.webs):
        if web is None or web.popen.poll() is not None:
            chaos.cluster.start_web(index, wait=False)
    for slot, worker in enumerate(chaos.cluster.workers):
        if worker is None or worker.popen.poll() is not None:
            chaos.cluster.start_worker(slot, wait=False)
    chaos.cluster.wait_ready()


@dataclass
class Reply:
    id: str
    expected: str


@dataclass
class Conversation:
    """One thread watched by a client on each web process; messages go through the first client."""

    thread_id: str
    clients: list[ChaosClient]
    turns: list[Turn] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    async def ask(self, content: str) -> Reply:
        """Send a message (again, with the same client_id, if it got lost with a socket: I7) and return its reply."""
        sender = self.clients[0]
        client_id = str(uuid.uuid4())
        turns = [*self.turns, Turn("user", content)]

        def posted() -> dict | None:
            messages = (event for event in sender.events if event["type"] == "message")
            return next((event for event in messages if event["message"].get("client_id") == client_id), None)

        for _ in range(5):
            refusals = len(sender.errors)
            await sender.send({"type": "send", "content": content, "client_id": client_id})
            with contextlib.suppress(AssertionError):  # a socket lost with the frame: send it again
                await sender.wait_for(lambda: posted() or len(sender.errors) > refusals, 5, "the message")  # noqa: B023 (awaited here)
            assert len(sender.errors) == refusals, f"the send was refused: {sender.errors[-1]}"
            if message := posted():
                break
        else:
            raise AssertionError(f"thread {self.thread_id}: the message was never posted")
        start = await sender.wait_for(
            lambda: next((e for e in sender.events if e["type"] == "start" and e["seq"] == message["seq"] + 1), None),
            10,
            "the reply's start event",
        )
        reply = Reply(id=start["message"]["id"], expected=scripted_reply(turns, REPLY_TOKENS))
        self.turns = turns
        self.replies.append(reply)
        return reply

    async def finish(self, reply: Reply, timeout: float = REPLY_TIMEOUT_SECONDS) -> dict:
        """Wait until every client has the reply's `end`; return it."""
        for client in self.clients:
            await client.wait_for(partial(client.end_of, reply.id), timeout, f"the end of reply {reply.id}")
        self.turns.append(Turn("assistant", self.clients[0].text_of(reply.id)))
        return self.clients[0].end_of(reply.id)

    def mid_reply(self, reply: Reply) -> bool:
        """Whether every client has some of the reply's text and none has its end."""
        return all(client.text_of(reply.id) and not client.end_of(reply.id) for client in self.clients)


OpenConversations = Callable[[int], Awaitable[list[Conversation]]]


@pytest.fixture
async def open_conversations(chaos: Chaos) -> AsyncIterator[OpenConversations]:
    """Open conversations for a scenario: `await open_conversations(count)`; all closed after it, passed or failed."""
    opened: list[Conversation] = []

    async def open_some(count: int) -> list[Conversation]:
        ports = chaos.cluster.ports
        conversations = []
        for _ in range(count):
            thread_id = next(chaos.threads)
            # One client per web process, each resuming on the other one when its own goes away.
            clients = [ChaosClient(thread_id, chaos.cookie, ports[i:] + ports[:i]) for i in range(len(ports))]
            opened.append(Conversation(thread_id, clients))
            for client in clients:
                await client.start()
            conversations.append(opened[-1])
        return conversations

    yield open_some
    for conversation in opened:
        for client in conversation.clients:
            await client.stop()


async def check_logs(chaos_db: ChaosDatabase, conversations: list[Conversation]) -> tuple[int, int]:
    """Check the stored logs and return how many events clients missed and received twice.

    Stored: seqs 1..last without a gap (a segment row holds seq…seq_last), and each reply's
    text is the concatenation of its deltas (nothing half-written). Clients: each reply's text as stored.
    """
    lost = duplicated = 0
    for conversation in conversations:
        last_seq = await chaos_db.value("SELECT last_seq FROM threads_thread WHERE id = %s", conversation.thread_id)
        chunks = await chaos_db.rows(
            "SELECT seq, seq_last, kind, message_id::text, text FROM streaming_chunk WHERE thread_id = %s ORDER BY seq",
            conversation.thread_id,
        )
        stored = [seq for first, last, *_ in chunks for seq in range(first, last + 1)]
        assert stored == list(range(1, last_seq + 1)), "the stored log has gaps"
        for client in conversation.clients:
            with contextlib.suppress(AssertionError):  # what is still missing is counted as lost
                await client.wait_for(lambda: client.last_seq >= last_seq, 5, "the whole log")  # noqa: B023 (awaited here)
            missing, repeated = client.gaps_and_repeats(last_seq)
            lost, duplicated = lost + missing, duplicated + repeated
            received = [event["seq"] for event in client.events]
            assert received == sorted(received), "events arrived out of order"
        for reply in conversation.replies:
            content = await chaos_db.value("SELECT content FROM threads_message WHERE id = %s", reply.id)
            deltas = "".join(
                text for *_, kind, message_id, text in chunks if kind == "delta" and message_id == reply.id
            )
            assert content == deltas, f"reply {reply.id}: stored text is not its deltas"
            for client in conversation.clients:
                assert client.text_of(reply.id) == content, f"reply {reply.id}: a client's text differs"
    return lost, duplicated


async def reply_statuses(chaos_db: ChaosDatabase, conversations: list[Conversation]) -> dict[str, tuple[str, int]]:
    """Return each reply's message status and its generation's attempts."""
    ids = [reply.id for conversation in conversations for reply in conversation.replies]
    rows = await chaos_db.rows(
        "SELECT m.id::text, m.status, g.attempts FROM threads_message m "
        "JOIN streaming_generation g ON g.message_id = m.id WHERE m.id::text = ANY(%s)",
        ids,
    )
    return {message_id: (status, attempts) for message_id, status, attempts in rows}


async def assert_complete_and_exact(chaos_db: ChaosDatabase, conversations: list[Conversation]) -> None:
    statuses = await reply_statuses(chaos_db, conversations)
    for conversation in conversations:
        for reply in conversation.replies:
            assert statuses[reply.id][0] == "complete", f"reply {reply.id} ended {statuses[reply.id][0]}"
            content = await chaos_db.value("SELECT content FROM threads_message WHERE id = %s", reply.id)
            assert content == reply.expected, f"reply {reply.id}: the text has a seam"


async def holdings(chaos_db: ChaosDatabase, workers: list[str]) -> dict[str, list[str]]:
    """Return the generations that each of `workers` holds with some text written (mid-reply)."""
    # A reply's text is in its delta rows until it ends (its message's content is written then).
    rows = await chaos_db.rows(
        "SELECT g.worker, g.id::text FROM streaming_generation g WHERE g.status = 'running' AND g.worker = ANY(%s) "
        "AND EXISTS (SELECT 1 FROM streaming_chunk c WHERE c.message_id = g.message_id AND c.kind = 'delta')",
        workers,
    )
    held: dict[str, list[str]] = {}
    for worker, generation_id in rows:
        held.setdefault(worker, []).append(generation_id)
    return held


async def taken_over(chaos_db: ChaosDatabase, generation_ids: list[str], workers: list[str]) -> bool:
    """Whether each of the generations has ended or is held by one of `workers`."""
    held_or_done = await chaos_db.value(
        "SELECT count(*) FROM streaming_generation WHERE id::text = ANY(%s) AND (status = 'done' OR worker = ANY(%s))",
        generation_ids,
        workers,
    )
    return held_or_done == len(generation_ids)


async def claim_lag_ms(chaos_db: ChaosDatabase, reply: Reply) -> float:
    """Return how long after the reply was posted a worker claimed it."""
    lag = await chaos_db.value(
        "SELECT extract(epoch FROM g.started_at - m.created_at) FROM streaming_generation g "
        "JOIN threads_message m ON m.id = g.message_id WHERE m.id = %s",
        reply.id,
    )
    return float(lag) * 1000


async def test_idle_workers_wake_within_50ms(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """An idle worker in another process starts a posted reply within 50 ms, on pooled connections."""
    (conversation,) = await open_conversations(1)
    sessions = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    sessions_before = await chaos_db.value(sessions)
    lags = []
    for number in range(5):
        reply = await conversation.ask(f"wake up {number}")
        await conversation.finish(reply)
        lags.append(await claim_lag_ms(chaos_db, reply))
    new_sessions = await chaos_db.value(sessions) - sessions_before
    lost, duplicated = await check_logs(chaos_db, [conversation])
    chaos.report(
        "wake-up",
        replies=5,
        claim_lag_ms=f"median {statistics.median(lags):.0f} max {max(lags):.0f}",
        new_db_sessions=new_sessions,
        lost=lost,
        duplicated=duplicated,
    )
    # Without the wake-up, a claim waits for the poll: up to STREAM_WORKER_POLL_SECONDS.
    assert max(lags) < 50, lags
    # About 40 flushes per reply, each its own short connection checkout: a pool serves them all.
    assert new_sessions < 20
    assert (lost, duplicated) == (0, 0)
    await assert_complete_and_exact(chaos_db, [conversation])


async def test_sigkill_holding_worker_20_times(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """Workers SIGKILLed mid-reply 20 times: every reply completes exactly; no client misses or repeats events (I8)."""
    conversations = await open_conversations(6)
    asking = True

    async def converse(conversation: Conversation, number: int) -> None:
        turn = 0
        while asking:
            await conversation.finish(await conversation.ask(f"kill test {number}.{turn}: go on"))
            turn += 1

    talks = [asyncio.create_task(converse(conversation, n)) for n, conversation in enumerate(conversations)]
    started = time.monotonic()
    kills = 0
    try:
        while kills < 20:
            held = await async_wait_until(
                lambda: holdings(chaos_db, chaos.cluster.live_worker_names()), 30, "a worker holding a reply mid-way"
            )
            # The worker holding the fewest: the other one's replies get to finish in the meantime.
            name, generation_ids = min(held.items(), key=lambda holding: len(holding[1]))
            slot = chaos.cluster.worker_slot(name)
            if slot is None:  # it exited in between
                continue
            os.kill(chaos.cluster.workers[slot].popen.pid, signal.SIGKILL)
            await asyncio.to_thread(chaos.cluster.workers[slot].popen.wait)
            kills += 1
            chaos.cluster.start_worker(slot, wait=False)
            # Let a live worker take the replies over before the next kill, so that each kill
            # interrupts a takeover's writing rather than piling onto replies nobody holds.
            await async_wait_until(
                lambda: taken_over(chaos_db, generation_ids, chaos.cluster.live_worker_names()),  # noqa: B023 (awaited here)
                LEASE_SECONDS * 10,
                "the killed worker's replies to be taken over",
            )
    finally:
        asking = False
        await asyncio.wait_for(asyncio.gather(*talks), REPLY_TIMEOUT_SECONDS)
    elapsed = time.monotonic() - started
    statuses = await reply_statuses(chaos_db, conversations)
    lost, duplicated = await check_logs(chaos_db, conversations)
    chaos.report(
        "1 worker-sigkill",
        replies=len(statuses),
        kills=kills,
        takeovers=sum(attempts - 1 for _, attempts in statuses.values()),
        lost=lost,
        duplicated=duplicated,
        seconds=f"{elapsed:.0f}",
    )
    assert (lost, duplicated) == (0, 0)
    await assert_complete_and_exact(chaos_db, conversations)


async def test_sigkill_web_process_clients_resume_on_the_other(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """Clients of a SIGKILLed web process resume on the other one from their cursor, exactly (I3)."""
    conversations = await open_conversations(4)
    replies = [await conversation.ask("web kill: go on") for conversation in conversations]
    for conversation, reply in zip(conversations, replies, strict=True):
        await async_wait_until(partial(conversation.mid_reply, reply), 10, "text on every client")
    killed_port = chaos.cluster.ports[0]
    chaos.cluster.stop_process(chaos.cluster.webs[0], signal.SIGKILL)
    for conversation, reply in zip(conversations, replies, strict=True):
        await conversation.finish(reply)
    lost, duplicated = await check_logs(chaos_db, conversations)
    moved = [c.connections for conv in conversations for c in conv.clients if c.connections[0] == killed_port]
    chaos.report(
        "2 web-sigkill", replies=len(replies), kills=1, resumed_clients=len(moved), lost=lost, duplicated=duplicated
    )
    assert moved and all(connections[1:2] == [chaos.cluster.ports[1]] for connections in moved), moved
    assert (lost, duplicated) == (0, 0)
    await assert_complete_and_exact(chaos_db, conversations)


async def test_cancel_through_one_web_process_stops_the_worker_within_1s(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """A cancel sent to web process A ends the reply running on a worker `cancelled` within 1 s, seen on B (I5)."""
    conversations = await open_conversations(2)
    latencies = {}
    for conversation, how in zip(conversations, ["frame", "flag"], strict=True):
        reply = await conversation.ask(f"cancel by {how}")
        await async_wait_until(partial(conversation.mid_reply, reply), 10, "text on every client")
        worker = await chaos_db.value("SELECT worker FROM streaming_generation WHERE message_id = %s", reply.id)
        assert worker in chaos.cluster.live_worker_names()
        cancelled_at = time.time()
        if how == "frame":
            await conversation.clients[0].send({"type": "cancel"})  # client 0 is on web process A
        else:
            # No notification at all: the runner reads the flag at its next flush or heartbeat.
            flag = "UPDATE streaming_generation SET cancel_requested = true WHERE message_id = %s"
            await chaos_db.rows(flag, reply.id)
        observer = conversation.clients[1]  # on web process B
        end = await observer.wait_for(partial(observer.end_of, reply.id), 5, "the cancelled end")
        latencies[how] = observer.received_at[observer.events.index(end)] - cancelled_at
        assert end["status"] == "cancelled"
    lost, duplicated = await check_logs(chaos_db, conversations)
    chaos.report(
        "6 cancel-across-processes",
        replies=2,
        cancel_ms=f"frame {latencies['frame'] * 1000:.0f} flag {latencies['flag'] * 1000:.0f}",
        lost=lost,
        duplicated=duplicated,
    )
    assert max(latencies.values()) < 1.0, latencies
    assert (lost, duplicated) == (0, 0)


async def test_redis_restart_mid_reply(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """Redis restarted mid-reply: clients end complete, repaired from the database, and live publishing resumes (I3)."""
    conversations = await open_conversations(4)
    replies = [await conversation.ask("redis restart: go on") for conversation in conversations]
    for conversation, reply in zip(conversations, replies, strict=True):
        await async_wait_until(partial(conversation.mid_reply, reply), 10, "text on every client")
    try:
        await asyncio.to_thread(chaos.services.stop_redis)
        written_before = await chaos_db.value("SELECT max(id) FROM streaming_chunk")
        # The workers go on committing with nobody to publish to.
        await async_wait_until(
            lambda: chaos_db.value("SELECT max(id) > %s FROM streaming_chunk", written_before),
            10,
            "chunks committed while Redis is down",
        )
    finally:
        await asyncio.to_thread(chaos.services.start_redis)
    for conversation, reply in zip(conversations, replies, strict=True):
        await conversation.finish(reply)
    # Publishing resumes: once the workers are back in their group, a new reply wakes one at once
    # and reaches every client live, well before a repair (STREAM_REPAIR_SECONDS of quiet) would.
    layer_redis = redis.Redis.from_url(chaos.redis_url)
    # The pub/sub layer's name for the group (channels_redis.pubsub), subscribed once per worker process.
    group_channel = f"{chaos.prefix}__group__{WORKERS_GROUP}"
    await async_wait_until(
        lambda: layer_redis.pubsub_numsub(group_channel)[0][1] >= 2, 10, "the workers to rejoin their group"
    )
    layer_redis.close()
    after = [await conversation.ask("after the restart") for conversation in conversations]
    live_lags, claim_lags = [], []
    for conversation, reply in zip(conversations, after, strict=True):
        await conversation.finish(reply)
        claim_lags.append(await claim_lag_ms(chaos_db, reply))
        finished_at = await chaos_db.value(
            "SELECT extract(epoch FROM finished_at) FROM streaming_generation WHERE message_id = %s", reply.id
        )
        for client in conversation.clients:
            received_at = client.received_at[client.events.index(client.end_of(reply.id))]
            live_lags.append(received_at - float(finished_at))
    lost, duplicated = await check_logs(chaos_db, conversations)
    reconnects = sum(len(client.connections) - 1 for conversation in conversations for client in conversation.clients)
    chaos.report(
        "4 redis-restart",
        replies=len(replies) + len(after),
        restarts=1,
        client_reconnects=reconnects,
        claim_after_restart_ms=f"max {max(claim_lags):.0f}",
        end_after_restart_ms=f"max {max(live_lags) * 1000:.0f}",
        lost=lost,
        duplicated=duplicated,
    )
    assert (lost, duplicated) == (0, 0)
    assert max(claim_lags) < 100, claim_lags  # woken again, not found by the poll
    assert max(live_lags) < 0.5, live_lags
    await assert_complete_and_exact(chaos_db, conversations)


async def test_sigterm_worker_hands_replies_over_before_the_lease_expires(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """A SIGTERMed worker releases its replies: another worker continues them long before the lease would run out."""
    await asyncio.to_thread(chaos.cluster.restart_workers, GENERATION_LEASE_SECONDS=str(LONG_LEASE_SECONDS))
    conversations = await open_conversations(4)
    replies = [await conversation.ask("sigterm: go on") for conversation in conversations]
    held = await async_wait_until(
        lambda: holdings(chaos_db, chaos.cluster.live_worker_names()), 10, "a worker holding a reply mid-way"
    )
    name, generation_ids = next(iter(held.items()))
    slot = chaos.cluster.worker_slot(name)
    terminated_at = time.monotonic()
    chaos.cluster.workers[slot].popen.send_signal(signal.SIGTERM)

    async def taken_over() -> bool:
        workers = await chaos_db.rows(
            "SELECT worker FROM streaming_generation WHERE id::text = ANY(%s) AND attempts = 2", generation_ids
        )
        return len(workers) == len(generation_ids) and name not in {worker for (worker,) in workers}

    await async_wait_until(taken_over, LONG_LEASE_SECONDS, "the other worker to take the replies over")
    handover_s = time.monotonic() - terminated_at
    exit_code = await asyncio.to_thread(chaos.cluster.workers[slot].popen.wait, 10)
    for conversation, reply in zip(conversations, replies, strict=True):
        await conversation.finish(reply)
    lost, duplicated = await check_logs(chaos_db, conversations)
    chaos.report(
        "3 worker-sigterm",
        replies=len(replies),
        handed_over=len(generation_ids),
        handover_ms=f"{handover_s * 1000:.0f}",
        lease_s=LONG_LEASE_SECONDS,
        exit_code=exit_code,
        lost=lost,
        duplicated=duplicated,
    )
    assert exit_code == 0
    assert handover_s < 5, "handed over, not left to expire"
    assert (lost, duplicated) == (0, 0)
    await assert_complete_and_exact(chaos_db, conversations)


async def test_postgres_restart_mid_reply(
    chaos: Chaos, chaos_db: ChaosDatabase, open_conversations: OpenConversations
) -> None:
    """PostgreSQL restarted mid-reply: the workers retry their writes and complete; nothing is half-written (I8, I9)."""
    if chaos.cluster.worker_environment.get("GENERATION_LEASE_SECONDS") != str(LONG_LEASE_SECONDS):
        # A lease longer than the outage: completing then proves the retries, not a takeover.
        await asyncio.to_thread(chaos.cluster.restart_workers, GENERATION_LEASE_SECONDS=str(LONG_LEASE_SECONDS))
    conversations = await open_conversations(4)
    replies = [await conversation.ask("postgres restart: go on") for conversation in conversations]
    for conversation, reply in zip(conversations, replies, strict=True):
        await async_wait_until(partial(conversation.mid_reply, reply), 10, "text on every client")
    logs_before = {worker.name: len(worker.log()) for worker in chaos.cluster.workers}
    stopped_at = time.monotonic()
    try:
        await asyncio.to_thread(chaos.services.stop_postgres)
        await async_wait_until(
            lambda: any("database write failed" in w.log()[logs_before[w.name] :] for w in chaos.cluster.workers),
            10,
            "a worker to retry a write",
        )
    finally:
        await asyncio.to_thread(chaos.services.start_postgres)
    outage_s = time.monotonic() - stopped_at
    for conversation, reply in zip(conversations, replies, strict=True):
        await conversation.finish(reply)
    statuses = await reply_statuses(chaos_db, conversations)
    lost, duplicated = await check_logs(chaos_db, conversations)
    chaos.report(
        "5 postgres-restart",
        replies=len(replies),
        outage_ms=f"{outage_s * 1000:.0f}",
        complete=sum(status == "complete" for status, _ in statuses.values()),
        failed=sum(status == "failed" for status, _ in statuses.values()),
        takeovers=sum(attempts - 1 for _, attempts in statuses.values()),
        lost=lost,
        duplicated=duplicated,
    )
    assert (lost, duplicated) == (0, 0)
    assert {attempts for _, attempts in statuses.values()} == {1}, "the same worker went on after the outage"
    await assert_complete_and_exact(chaos_db, conversations)
