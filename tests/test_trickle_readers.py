"""I10 against readers that read, but slowly: each costs the server one bounded page, and falling behind ends it.

Eight readers take a long log (250 messages of 31,000 characters) at 20 KB/s from the
Procfile's daphne. Each used to pin the backlog page of 500 events it was working
through (all of those messages, tens of megabytes) for minutes; now a page ends at
STREAM_BACKLOG_PAGE_BYTES, and a reader that stays behind the buffer bound for
STREAM_CLIENT_BEHIND_SECONDS is closed with 4008, to resume from its cursor.
"""

import threading
import time
from collections.abc import Iterator

import pytest

from .live_server import live_environment, procfile_web
from .test_slow_consumer import SETUP, PeakMemory, Site, StalledWebSocket, read_until

TRICKLE_READERS = 8
READ_BYTES_PER_SECOND = 20_000
READ_INTERVAL_S = 0.1
BEHIND_SECONDS = 6
# Each reader may cost its buffer bound (1 MiB) and one page (STREAM_BACKLOG_PAGE_BYTES of text, its frames):
# about 13 MiB for eight; a page of 500 events of these messages made it 60.
RSS_GROWTH_LIMIT = 32 * 1024 * 1024
CLOSED_WITHIN_S = 40


class TrickleWebSocket(StalledWebSocket):
    """A WebSocket client that reads READ_BYTES_PER_SECOND until the server closes it."""

    ended = False

    def trickle(self, stop: threading.Event) -> None:
        """Read at the set pace until the connection ends (`ended`) or `stop` is set."""
        self.socket.settimeout(READ_INTERVAL_S * 10)
        step = int(READ_BYTES_PER_SECOND * READ_INTERVAL_S)
        while not stop.is_set():
            try:
                chunk = self.socket.recv(step)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.ended = True
                return
            self.received += chunk
            time.sleep(READ_INTERVAL_S)  # the pace of a reader on a poor link, by design


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("trickle")
    env = live_environment(directory, STREAM_CLIENT_BEHIND_SECONDS=str(BEHIND_SECONDS))
    with procfile_web(directory, env) as server:
        token, thread_id, stopped_reply_id = server.shell(SETUP).split()
        site = Site(server=server, token=token, thread_id=thread_id, stopped_reply_id=stopped_reply_id, visitor=None)
        with site.websocket() as warm_up:  # the memory serving the log takes anyway is in use before measuring
            read_until(warm_up, lambda frame: frame["type"] == "ready")
        yield site


def test_trickle_readers_cost_a_bounded_page_and_are_closed_when_behind(site):
    """Eight 20 KB/s readers of a long log: the server grows by a bounded amount and closes each with 4008."""
    baseline = site.server.rss_bytes()
    readers = [TrickleWebSocket(site) for _ in range(TRICKLE_READERS)]
    stop = threading.Event()
    threads = [threading.Thread(target=reader.trickle, args=(stop,)) for reader in readers]
    with PeakMemory(site.server.rss_bytes) as memory:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + CLOSED_WITHIN_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        for thread in threads:
            thread.join()
    growth = memory.peak - baseline
    assert growth < RSS_GROWTH_LIMIT, f"the server grew by {growth / 2**20:.1f} MiB for {TRICKLE_READERS} readers"
    # The close frame waits behind what the reader has not taken (megabytes at its pace), so the
    # reader sees it or, past the close handshake's timeout, its connection dropped: either way it ends.
    assert all(site.closed_as_slow(reader.port) for reader in readers), "each reader that stays behind is closed"
    assert not any(thread.is_alive() for thread in threads)
    assert all(reader.ended for reader in readers), f"still open after {CLOSED_WITHIN_S} s"
    # What a closed reader got is a prefix of the log it resumes after.
    received, _ = readers[0].frames()
    assert [frame["seq"] for frame in received if "seq" in frame and frame["type"] != "ready"][:3] == [1, 2, 3]
