"""Bad input never costs data: fuzzed WebSocket frames and API requests while a reply streams to a well-behaved client.

Each test keeps a reply streaming in Alice's thread, read by a well-behaved WebSocket
client, while the fuzzer throws input at the consumer or the JSON API as Alice (her
thread, a second thread of hers), as Bob (whose thread must not change) and as nobody.
Nothing may answer 5xx or crash a consumer; a socket or request fails alone; and the
well-behaved client's log ends complete and exact: seqs 1…N without gaps or doubles, and
every message rebuilt from its events equals what the database stored.
"""

import asyncio
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streaming.errors import ChatError
from streaming.models import Chunk, Generation
from streaming.services.endings import ACTIVE_STATUSES
from threads.inputs import parse_json_object
from threads.models import Message, Thread
from threads.services import message_post, thread_create
from threads.tokens.services import api_token_create

from .conftest import RECEIVE_TIMEOUT_S, ThreadSocket
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

FRAMES = 10_000
REQUESTS = 2_000
# Drawn: a few more than REQUESTS, as calls that would delete the well-behaved client's thread are skipped.
DRAWN = 2_100
FUZZ_SOCKETS = 6
BATCH = 100
ERROR_CODES = {"bad_request", "busy", "too_long", "not_found", "forbidden", "rate_limited", "not_running"}


@pytest.fixture(autouse=True)
def fuzz_settings(settings):
    settings.CHAT_SENDS_PER_MINUTE = 100_000  # let fuzzed sends through to the writes they can make
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    settings.SCRIPTED_REPLY_TOKENS = 80
    settings.STREAM_FLUSH_MS = 20


# --- The well-behaved client -----------------------------------------------------


@dataclass
class Conversation:
    """Alice's thread, kept replying while the fuzzer runs, and the well-behaved client reading it."""

    thread: Thread
    reader: ThreadSocket
    ended: asyncio.Event
    fuzzing: bool = True

    async def read(self) -> None:
        """Read every frame, flagging each reply's end."""
        while True:
            frame = await self.reader.receive(timeout=RECEIVE_TIMEOUT_S * 3)
            if frame["type"] == "end":
                self.ended.set()

    async def keep_replying(self) -> None:
        """Post a message whenever no reply is being written, until the fuzzing stops."""
        while self.fuzzing:
            self.ended.clear()
            try:
                await database_sync_to_async(message_post)(thread=self.thread, content="Keep talking", client_id=None)
            except ChatError:  # busy with a reply a fuzzed send started, say
                pass
            await asyncio.wait_for(self.ended.wait(), RECEIVE_TIMEOUT_S * 3)

    async def settle(self) -> None:
        """Wait until no reply is being written and the reader has every event of the log."""
        deadline = asyncio.get_running_loop().time() + RECEIVE_TIMEOUT_S * 3
        while not await database_sync_to_async(self._settled)():
            assert asyncio.get_running_loop().time() < deadline, "the thread did not settle"
            await asyncio.sleep(0.05)  # polling the database for a condition

    def _settled(self) -> bool:
        thread = Thread.objects.get(pk=self.thread.pk)
        running = Generation.objects.filter(thread=thread, status__in=ACTIVE_STATUSES).exists()
        events = self.reader.log_events
        return not running and bool(events) and events[-1]["seq"] == thread.last_seq

    def assert_complete_and_exact(self) -> None:
        events = self.reader.log_events
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        rebuilt, statuses = {}, {}
        for event in events:
            if event["type"] in ("message", "start"):
                rebuilt[event["message"]["id"]] = event["message"]["content"]
                statuses[event["message"]["id"]] = event["message"]["status"]
            elif event["type"] == "delta":
                rebuilt[event["message_id"]] += event["text"]
            elif event["type"] == "end":
                statuses[event["message_id"]] = event["status"]
        stored = Message.objects.filter(thread=self.thread)
        assert rebuilt == {str(message.id): message.content for message in stored}
        assert statuses == {str(message.id): message.status for message in stored}
        assert len(rebuilt) > 2, "replies streamed during the fuzzing"


def assert_log_intact(thread: Thread) -> None:
    """A thread's events run 1…last_seq, and each finished reply's content is its deltas joined."""
    thread.refresh_from_db()
    rows = Chunk.objects.filter(thread=thread).order_by("seq").values_list("seq", "seq_last")
    assert [seq for first, last in rows for seq in range(first, last + 1)] == list(range(1, thread.last_seq + 1))
    # A reply's content is written when it ends: one still streaming has only its deltas.
    finished = Message.objects.filter(thread=thread, role=Message.Role.ASSISTANT).exclude(
        status=Message.Status.STREAMING
    )
    for reply in finished:
        deltas = (
            Chunk.objects.filter(message=reply, kind=Chunk.Kind.DELTA).order_by("seq").values_list("text", flat=True)
        )
        assert "".join(deltas) == reply.content


@dataclass
class People:
    alice: object
    bob: object
    main: Thread
    spare: Thread
    bobs: Thread


@pytest.fixture
def people(make_user) -> People:
    alice, bob = make_user("alice"), make_user("bob")
    return People(alice, bob, thread_create(owner=alice), thread_create(owner=alice), thread_create(owner=bob))


@pytest.fixture
async def conversation(people, connect, worker):
    """Start the well-behaved reader and the replies; after the test, stop them and settle the thread."""
    reader = await connect(people.main.id, people.alice)
    conversation = Conversation(thread=people.main, reader=reader, ended=asyncio.Event())
    reading = asyncio.create_task(conversation.read())
    replying = asyncio.create_task(conversation.keep_replying())
    yield conversation
    conversation.fuzzing = False
    await replying
    await conversation.settle()
    reading.cancel()


def snapshot(thread: Thread) -> tuple:
    thread.refresh_from_db()
    return (
        thread.title,
        thread.last_seq,
        list(Message.objects.filter(thread=thread).values_list("id", "content", "status")),
    )


# --- WebSocket frames ----------------------------------------------------------

STRINGS = [
    "",
    " ",
    "\n\t",
    "hi",
    "Hello there",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "😀",
    "\u202eevil",
    "<script>x</script>",
    "{{ request }}",
    "-1",
    "1e999",
    "NaN",
    str(uuid.uuid4()),
    "x" * 32_000,
    "x" * 32_001,
    "é" * 5000,
]


def random_string(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(STRINGS)
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x110000)])) for _ in range(rng.randrange(12)))


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    return [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 2**63, -(2**80), 10**30, 1.5, -0.0]),
        lambda: random_string(rng),
        lambda: random_string(rng),
        lambda: rng.choice(["send", "cancel", "ping"]),
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(4))},
        lambda: {"type": random_value(rng, depth + 1)},
    ][kind]()


def plausible_frame(rng: random.Random) -> dict:
    """A frame close to a real one: a known or unknown type, fields of the right or a wrong type."""
    frame: dict = {
        "type": rng.choice(["send", "send", "cancel", "ping", "Send", "pong", "", "launch", None, 7, ["send"]])
    }
    if rng.random() < 0.8:
        frame["content"] = random_string(rng) if rng.random() < 0.7 else random_value(rng)
    if rng.random() < 0.5:
        frame["client_id"] = str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.6 else random_value(rng)
    if rng.random() < 0.2:
        frame[random_string(rng)] = random_value(rng)
    return frame


def mutate(rng: random.Random, text: str) -> str:
    """Cut, splice, duplicate or corrupt a frame's text."""
    characters = list(text)
    for _ in range(rng.randrange(1, 4)):
        position = rng.randrange(len(characters) + 1)
        action = rng.randrange(4)
        if action == 0:
            characters = characters[:position]
        elif action == 1:
            characters.insert(position, rng.choice('{}[]",:\\\x00\ud800 e9-'))
        elif action == 2 and characters:
            del characters[min(position, len(characters) - 1)]
        else:
            characters[position:position] = characters[: rng.randrange(len(characters) + 1)]
    return "".join(characters)


def fuzz_frames(rng: random.Random) -> list[str | bytes]:
    """Return one burst of fuzzed frames: text, binary, mutated, nested, huge, or a ping flood."""
    if rng.random() < 0.01:
        return [json.dumps({"type": "ping"})] * rng.randrange(20, 60)  # a ping flood
    kind = rng.randrange(10)
    if kind == 0:
        return [json.dumps(rng.choice([{"type": "ping"}, {"type": "cancel"}, {"type": "send", "content": "Hi"}]))]
    if kind == 1:
        return [rng.randbytes(rng.randrange(64))]
    if kind == 2:
        depth = rng.choice([10, 1_000, 100_000])
        return [rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "[" * depth])]
    if kind == 3:
        return [
            rng.choice(
                [
                    '{"type": "send", "content": "hi", "client_id": 1e999}',
                    "9" * 5000,
                    '{"type": NaN}',
                    '{"type": "send", "content": Infinity}',
                    "-" + "1" * 4301,
                    '{"type":"ping","type":"send"}',
                ]
            )
        ]
    if kind == 4:
        return [random_string(rng)]
    if kind in (5, 6):
        return [mutate(rng, json.dumps(plausible_frame(rng)))]
    return [json.dumps(plausible_frame(rng) if kind < 9 else random_value(rng))]


def answers_pong(frame: str | bytes) -> bool:
    """Return whether the protocol answers this frame with a pong: a valid JSON object of type ping."""
    if isinstance(frame, bytes):
        return False
    try:
        return parse_json_object(frame, what="frame").get("type") == "ping"
    except ChatError:
        return False


async def send_batch(socket: ThreadSocket, frames: list[str | bytes], answers: Counter) -> None:
    """Send frames, then a ping; return once every pong due is in: the consumer took them all and lives."""
    for frame in frames:
        # As daphne hands frames over, empty ones included (the test communicator's send_to refuses those).
        content = {"bytes": frame} if isinstance(frame, bytes) else {"text": frame}
        await socket.communicator.send_input({"type": "websocket.receive", **content})
    await socket.send({"type": "ping"})
    due = sum(map(answers_pong, frames)) + 1
    while due:
        output = await socket.communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
        assert output["type"] == "websocket.send", f"the socket closed: {output}"
        frame = json.loads(output["text"])
        if frame["type"] == "pong":
            due -= 1
        elif frame["type"] == "error":
            assert frame["code"] in ERROR_CODES and frame["detail"]
        answers[frame.get("code", frame["type"])] += 1


async def test_fuzzed_frames_cost_no_data(people, conversation, connect, session_cookie):
    """Ten thousand fuzzed frames neither crash a consumer nor cost the well-behaved client an event."""
    rng = random.Random(2026)
    threads = [people.main, people.spare] * (FUZZ_SOCKETS // 2)
    sockets = [await connect(thread.id, people.alice) for thread in threads]
    for socket in sockets:
        await socket.receive_until(lambda frame: frame["type"] in ("ready", "reset"))
    bobs_before = await database_sync_to_async(snapshot)(people.bobs)
    sent, answers = 0, Counter()
    while sent < FRAMES:
        for socket in sockets:
            batch: list[str | bytes] = []
            while len(batch) < BATCH:
                batch += fuzz_frames(rng)
            await send_batch(socket, batch, answers)
            sent += len(batch)
        # A socket on someone else's thread fails alone: closed 4404, the others go on.
        intruder = await connect(people.bobs.id, people.alice)
        assert await intruder.close_code() == 4404
    conversation.fuzzing = False
    await conversation.settle()
    print(f"\nfuzzed WebSocket frames: {sent}; frames answered: {dict(answers)}")
    await database_sync_to_async(conversation.assert_complete_and_exact)()
    for thread in (people.main, people.spare):
        await database_sync_to_async(assert_log_intact)(thread)
    assert await database_sync_to_async(snapshot)(people.bobs) == bobs_before


# --- JSON API requests -----------------------------------------------------------


@dataclass(frozen=True)
class Call:
    caller: str  # "alice", "bob" or "nobody"
    method: str
    route: str
    target: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def request(self, ids: dict[str, str], secrets: dict[str, str]) -> HttpStream:
        """Return the call as an HTTP request, its thread names swapped for the real ids.

        Bob only intrudes: what he names "bobs" is Alice's thread, so his own stays as it was.
        """
        if self.caller == "bob":
            ids = ids | {"bobs": ids["main"]}
        path = self.route.replace("{id}", ids.get(self.target, self.target))
        # Bytes on the wire: an unpaired surrogate goes as the invalid UTF-8 a client could send.
        query = urlencode([(name, ids.get(value, value)) for name, value in self.query], errors="surrogatepass")
        sent = {name.lower(): value.encode(errors="surrogatepass").decode("latin-1") for name, value in self.headers}
        headers = {"content-type": "application/json", **sent}
        if self.caller != "nobody":
            headers.setdefault("authorization", f"Bearer {secrets[self.caller]}")
        body = self.body
        for name, thread_id in ids.items():
            body = body.replace(json.dumps(name).encode(), json.dumps(thread_id).encode())
        return HttpStream(path + (f"?{query}" if query else ""), method=self.method, headers=headers, body=body)


# Thread names a call may use, swapped for ids when it runs: Alice's two threads, Bob's, and nobody's.
THREADS = ["main", "spare", "bobs", "unknown"]
TARGETS = THREADS + ["not-a-uuid", "%00", "..", "x" * 300, "00000000-0000-0000-0000-00000000000g"]
ROUTES = [
    ("GET", "/api/threads"),
    ("POST", "/api/threads"),
    ("GET", "/api/threads/{id}"),
    ("PATCH", "/api/threads/{id}"),
    ("DELETE", "/api/threads/{id}"),
    ("PUT", "/api/threads/{id}"),
    ("GET", "/api/threads/{id}/messages"),
    ("POST", "/api/threads/{id}/messages"),
    ("POST", "/api/threads/{id}/cancel"),
    ("GET", "/api/threads/{id}/events"),
    ("POST", "/api/chat"),
    ("GET", "/api/chat/stream"),
    ("GET", "/api/chat/{id}/stream"),
    ("POST", "/api/chat/{id}/stop"),
    ("GET", "/api/openapi.json"),
]
texts = st.one_of(
    st.sampled_from(STRINGS + THREADS), st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)
ui_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", 1]), "id": json_values},
        optional={
            "parts": st.one_of(json_values, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts})))
        },
    ),
    max_size=3,
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "title": json_values,
            "content": json_values,
            "client_id": json_values,
            "id": st.one_of(st.sampled_from(THREADS), json_values),
            "message": st.one_of(json_values, st.fixed_dictionaries({"role": st.just("user"), "content": json_values})),
            "messages": st.one_of(json_values, ui_messages),
            "trigger": st.sampled_from(["regenerate-message", "submit-message", 0]),
        },
    ).map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"", b"{", b"[" * 100_000, b'{"content": "' + b"x" * 40_000 + b'"}', b"\xff\xfe", b"null"]),
)
queries = st.lists(
    st.tuples(
        st.sampled_from(["limit", "cursor", "before", "after", "id", "x"]),
        st.one_of(st.integers(-5, 300).map(str), texts, st.sampled_from(["9" * 5000, str(2**63), "", "0"])),
    ),
    max_size=3,
)
headers = st.lists(
    st.tuples(
        st.sampled_from(["Last-Event-ID", "Content-Type", "Accept", "Authorization", "Origin"]),
        st.one_of(
            st.sampled_from(["-1", "99999999999", "text/plain", "Bearer chs_nope", "Bearer ", "Basic eA=="]), texts
        ),
    ),
    max_size=2,
)


@st.composite
def calls(draw) -> Call:
    method, route = draw(st.sampled_from(ROUTES))
    return Call(
        caller=draw(st.sampled_from(["alice", "alice", "alice", "bob", "nobody"])),
        method=method,
        route=route,
        target=draw(st.sampled_from(TARGETS)),
        query=tuple(draw(queries)),
        headers=tuple(draw(headers)),
        body=draw(bodies) if method in ("POST", "PATCH", "PUT", "DELETE") else b"",
    )


def generated_calls(count: int) -> list[Call]:
    """Draw `count` calls with Hypothesis, reproducibly (derandomized), without running them yet."""
    drawn: list[Call] = []

    @hypothesis_settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(calls())
    def collect(call: Call) -> None:
        drawn.append(call)

    collect()
    return drawn


@pytest.fixture
def drawn() -> list[Call]:
    """The calls to make, drawn before anything else runs: Hypothesis wants the `random` module to itself."""
    return generated_calls(DRAWN)


async def test_fuzzed_api_requests_cost_no_data(drawn, people, conversation):
    """Two thousand fuzzed API requests get no 5xx and cost the well-behaved client nothing; Bob's thread untouched."""
    ids = {
        name: str(thread.id) for name, thread in (("main", people.main), ("spare", people.spare), ("bobs", people.bobs))
    }
    ids["unknown"] = str(uuid.uuid4())
    secrets = {
        name: (await database_sync_to_async(api_token_create)(user=user, name="fuzz"))[1]
        for name, user in (("alice", people.alice), ("bob", people.bob))
    }
    bobs_before = await database_sync_to_async(snapshot)(people.bobs)
    statuses: dict[int, int] = {}
    for call in drawn:
        if call.method == "DELETE" and call.target == "main" and call.caller == "alice":
            continue  # deleting the thread the well-behaved client reads is allowed, and costs its data by design
        stream = call.request(ids, secrets)
        status, answer_headers = await stream.start()
        statuses[status] = statuses.get(status, 0) + 1
        # An endless stream that answered is all such a request has to show: the client goes.
        body = "" if answer_headers.get("content-type") == "text/event-stream" else await stream.read_all()
        await stream.close()
        what = f"{call.caller}: {call.method} {call.route} on {call.target[:40]!r} with {len(call.body)} body bytes"
        assert status < 500, f"{what} answered {status}: {body[:300]}"
        if status >= 400:
            error = json.loads(body)["error"]
            assert error["code"] in ERROR_CODES and error["detail"], f"{what}: {body[:300]}"
    conversation.fuzzing = False
    await conversation.settle()
    print(f"\nfuzzed API requests: {sum(statuses.values())}, by status: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= REQUESTS
    await database_sync_to_async(conversation.assert_complete_and_exact)()
    for thread in (people.main, people.spare):
        if await Thread.objects.filter(pk=thread.pk).aexists():
            await database_sync_to_async(assert_log_intact)(thread)
    assert await database_sync_to_async(snapshot)(people.bobs) == bobs_before
