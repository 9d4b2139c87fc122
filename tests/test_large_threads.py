"""A thread of the longest messages stays servable: resets fit the web server's frame limit, snapshots are paged.

Run against the Procfile's own `web` command, whose daphne drops any frame over 256 KiB.
"""

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from .live_server import PASSWORD, WebProcess, live_environment, procfile_web
from .outsider import Visitor, frames_until

FRAME_LIMIT_BYTES = 256 * 1024
MESSAGES = 9
LONGEST = "😀" * 32_000  # the longest message allowed, four bytes a character
SETTLED_S = 60


@pytest.fixture(scope="module")
def big_thread(tmp_path_factory) -> Iterator[tuple[WebProcess, Visitor, str]]:
    """Serve a thread of MESSAGES exchanges whose questions are the longest allowed, its log then pruned."""
    env = live_environment(
        tmp_path_factory.mktemp("large"), SCRIPTED_TOKENS_PER_SECOND="2000", SCRIPTED_REPLY_TOKENS="3"
    )
    with procfile_web(tmp_path_factory.mktemp("large-web"), env) as server:
        server.create_users("writer")
        visitor = Visitor(server.url)
        assert visitor.sign_in("writer", PASSWORD).status == 302
        thread_id = visitor.request("POST", "/api/threads", body={}).json()["id"]
        for _ in range(MESSAGES):
            deadline = time.monotonic() + SETTLED_S
            send = {"content": LONGEST}
            while (sent := visitor.request("POST", f"/api/threads/{thread_id}/messages", body=send)).status == 409:
                assert time.monotonic() < deadline, "the previous reply never ended"
                time.sleep(0.05)  # polling the API for the reply's end, as a script would
            assert sent.status == 202
        yield server, visitor, thread_id


def reset_of(visitor: Visitor, thread_id: str, after: str) -> dict:
    """Connect with cursor `after` and return the reset frame it gets; fail if the server closes the socket."""
    with visitor.websocket(thread_id, after=after) as socket:
        try:
            frames = frames_until(socket, "ready")
        except ConnectionClosed as closed:
            raise AssertionError(f"closed with {closed.rcvd.code} instead of a reset") from None
    (reset,) = [frame for frame in frames if frame["type"] == "reset"]
    assert len(json.dumps(reset, ensure_ascii=False, separators=(",", ":")).encode()) < FRAME_LIMIT_BYTES
    return reset


def all_messages(visitor: Visitor, thread_id: str, reset: dict) -> list[dict]:
    """Return the reset's messages with the earlier ones its `next` leads to, paged in over the API."""
    messages, before = reset["messages"], reset["next"]
    while before is not None:
        page = visitor.request("GET", f"/api/threads/{thread_id}/messages?before={before}")
        assert page.status == 200
        messages = page.json()["messages"] + messages
        before = page.json()["next"]
    return messages


@pytest.mark.parametrize("after", ["1000000", "abc"])
def test_reset_of_a_large_thread_fits_a_frame(big_thread, after):
    """A cursor ahead of the log or malformed gets a reset under the frame limit, and `next` leads to the rest."""
    server, visitor, thread_id = big_thread
    reset = reset_of(visitor, thread_id, after)
    assert reset["messages"] and reset["next"] is not None
    messages = all_messages(visitor, thread_id, reset)
    assert [message["content"] for message in messages if message["role"] == "user"] == [LONGEST] * MESSAGES


def test_reset_inside_a_pruned_range_fits_a_frame(big_thread):
    """After prunechunks, a tab whose cursor lies in the pruned range gets a reset it can take, not 4500."""
    server, visitor, thread_id = big_thread
    server.manage("prunechunks", "--older-than", "0m")
    reset = reset_of(visitor, thread_id, "1")
    assert len(all_messages(visitor, thread_id, reset)) == 2 * MESSAGES


def test_snapshot_api_is_paged_and_bounded(big_thread):
    """`GET /api/threads/<id>` answers the newest messages within API_MAX_RESPONSE_BYTES and names `next`."""
    server, visitor, thread_id = big_thread
    answer = visitor.request("GET", f"/api/threads/{thread_id}")
    assert answer.status == 200 and len(answer.body) <= 1024 * 1024 + 4096
    snapshot = answer.json()
    assert snapshot["next"] is not None and len(snapshot["messages"]) < 2 * MESSAGES
    paged = visitor.request("GET", f"/api/threads/{thread_id}?limit=2")
    assert len(paged.json()["messages"]) == 2 and paged.json()["next"] is not None
