"""The benchmark's load clients: many tabs per process, on one event loop, over real WebSockets.

`python -m chatsite.bench.client` is driven in JSON lines on stdin (session.ClientProcess):
a plan, then `go` with the shared start time. A load plan opens `tabs` sockets on each of
its threads, spread over the web processes. The first tab of a thread is its sender: it
posts a message, waits for the reply's `end` and posts the next, until the run's time is
up. Every tab records each log event's seq and each token's latency; at the end it checks
what it received against the thread's snapshot from the HTTP API.
"""

import asyncio
import json
import random
import time
import urllib.request
import uuid
from collections import Counter
from typing import Any

import uvloop

from . import probes
from .sockets import read_line, write_line
from .stamps import token_latencies_ms
from .stats import Histogram
from .tab import Tab

# Handshakes (and their backlogs) in flight at once, so that opening 1,000 tabs is not a storm.
HANDSHAKE_CONCURRENCY = 50
SNAPSHOT_CONCURRENCY = 8
# How long tabs get to catch up with their sender once the last reply ended.
SETTLE_SECONDS = 15.0
# Flaws described in the report, per client process: enough to start looking.
MAX_FLAWS = 10


class Window:
    """The measured part of a run: after the warm-up, before the end."""

    def __init__(self, start: float, warmup_s: float, duration_s: float) -> None:
        self.start, self.opens, self.closes = start, start + warmup_s, start + duration_s

    def __contains__(self, moment: float) -> bool:
        return self.opens <= moment < self.closes


class Stream:
    """A thread with its tabs; the sender keeps one reply streaming at a time."""

    def __init__(self, load: "Load", thread_id: str, cookie: str, index: int) -> None:
        self.load, self.thread_id, self.cookie, self.index = load, thread_id, cookie, index
        self.tabs = [Tab(self, load.ports[(index + number) % len(load.ports)]) for number in range(load.tabs)]
        self.sender = self.tabs[0]
        self.reply_ended = asyncio.Event()
        self.reply_id: str | None = None
        self.sent_at = 0.0
        self.awaiting_first_token = False
        self.refused = False
        self.last_end_seq = 0
        self.replies = self.stalled = 0

    def on_sender_event(self, frame: dict[str, Any], now: float) -> None:
        kind = frame["type"]
        if kind == "start":
            self.reply_id = frame["message"]["id"]
        elif kind == "delta" and self.awaiting_first_token and frame["message_id"] == self.reply_id:
            self.awaiting_first_token = False
            if self.sent_at in self.load.window:
                self.load.first_token.add((now - self.sent_at) * 1000)
        elif kind == "end":
            self.last_end_seq = frame["seq"]
            self.reply_ended.set()

    def on_error(self, tab: Tab, code: str) -> None:
        self.load.errors[code] += 1
        if tab is self.sender:
            self.refused = True
            self.reply_ended.set()

    async def drive(self, stagger_s: float, reply_timeout_s: float) -> None:
        """Post a message whenever the previous reply ended, until the window closes."""
        window = self.load.window
        await asyncio.sleep(max(0.0, window.start + random.Random(self.index).uniform(0, stagger_s) - time.time()))
        while time.time() < window.closes:
            self.reply_ended.clear()
            self.refused, self.awaiting_first_token, self.sent_at = False, True, time.time()
            await self.sender.send(
                {"type": "send", "content": f"Benchmark message {self.replies}", "client_id": str(uuid.uuid4())}
            )
            try:
                await asyncio.wait_for(self.reply_ended.wait(), reply_timeout_s)
            except TimeoutError:
                self.stalled += 1
                return
            if self.refused:
                await asyncio.sleep(1.0)
            else:
                self.replies += 1

    async def settle(self) -> None:
        """Wait until every tab has the last reply's end."""
        deadline = time.monotonic() + SETTLE_SECONDS
        # Each tab's cursor moves in its own reader task; polling them costs nothing per frame.
        while any(tab.cursor < self.last_end_seq for tab in self.tabs) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


class Load:
    """One client process's share of the load: its streams, and what their tabs measured."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.ports, self.tabs = plan["ports"], plan["tabs"]
        self.streams = [
            Stream(self, stream["id"], stream["cookie"], plan["first_index"] + n)
            for n, stream in enumerate(plan["streams"])
        ]
        self.latency, self.first_token = Histogram(), Histogram()
        self.events = self.tokens = 0
        self.errors: Counter[str] = Counter()
        self.flaws: list[str] = []
        # Until `go`, nothing falls in the window.
        self.window = Window(float("inf"), 0, 0)

    def on_delivered(self, frame: dict[str, Any], now: float) -> None:
        received_in_window = now in self.window
        self.events += received_in_window
        if frame["type"] == "delta":
            latencies = token_latencies_ms(frame["text"], now)
            self.tokens += len(latencies) if received_in_window else 0
            for latency_ms in latencies:
                if now - latency_ms / 1000 in self.window:  # emitted in the window
                    self.latency.add(latency_ms)

    async def run(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)
        tabs = [tab for stream in self.streams for tab in stream.tabs]
        tasks = [asyncio.create_task(tab.run(gate)) for tab in tabs]
        try:
            await asyncio.gather(*(tab.ready.wait() for tab in tabs))
            write_line({"type": "connected", "sockets": len(tabs)})
            go = await read_line()
            self.window = Window(go["start"], self.plan["warmup_s"], self.plan["duration_s"])
            cpu = asyncio.create_task(self._cpu_in_window())
            await asyncio.gather(
                *(stream.drive(self.plan["stagger_s"], self.plan["reply_timeout_s"]) for stream in self.streams)
            )
            await asyncio.gather(*(stream.settle() for stream in self.streams))
            checks = await self._check()
            client_cpu_s = await cpu
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "latency": self.latency.to_json(),
            "first_token": self.first_token.to_json(),
            "events": self.events,
            "tokens": self.tokens,
            "client_cpu_s": client_cpu_s,
            "replies": sum(stream.replies for stream in self.streams),
            "stalled": sum(stream.stalled for stream in self.streams),
            "errors": dict(self.errors),
            "checks": dict(checks),
            "flaws": self.flaws[:MAX_FLAWS],
        }

    async def _cpu_in_window(self) -> float:
        await asyncio.sleep(max(0.0, self.window.opens - time.time()))
        used = time.process_time()
        await asyncio.sleep(max(0.0, self.window.closes - time.time()))
        return time.process_time() - used

    async def _check(self) -> Counter[str]:
        gate = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)

        async def check_stream(stream: Stream) -> Counter[str]:
            async with gate:
                snapshot = await asyncio.to_thread(self._snapshot, stream)
            checks: Counter[str] = Counter()
            for tab in stream.tabs:
                counts, flaws = tab.check(snapshot)
                checks.update(counts)  # update(), unlike +, keeps the zeros the report shows
                self.flaws += flaws
            checks["incomplete_replies"] = sum(
                m["role"] == "assistant" and m["status"] != "complete" for m in snapshot["messages"]
            )
            return checks

        total: Counter[str] = Counter()
        for checks in await asyncio.gather(*(check_stream(stream) for stream in self.streams)):
            total.update(checks)
        return total

    def _snapshot(self, stream: Stream) -> dict[str, Any]:
        """GET /api/threads/<id>: the stored messages and the seq they reflect."""
        url = f"http://127.0.0.1:{self.ports[0]}/api/threads/{stream.thread_id}"
        request = urllib.request.Request(url, headers={"Cookie": stream.cookie})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


async def load(plan: dict[str, Any]) -> dict[str, Any]:
    return await Load(plan).run()


async def serve() -> None:
    plan = await read_line()
    modes = {"load": load, "idle": probes.idle, "resume": probes.resume, "floor": probes.floor}
    write_line({"type": "result", **await modes[plan.pop("mode")](plan)})


if __name__ == "__main__":
    # On libuv, as the peer benchmark's Node clients are: less of the shared CPU per frame.
    uvloop.run(serve())
