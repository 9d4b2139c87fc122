"""One browser tab of the load: a socket on a thread that records every event it receives."""

import asyncio
import json
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from .sockets import open_socket
from .wire import WireSocket

if TYPE_CHECKING:
    from .client import Stream

LOG_EVENT_TYPES = {"message", "start", "delta", "end"}
RECONNECT_DELAY_SECONDS = 0.1
SOCKET_WAIT_SECONDS = 10.0


class Tab:
    """One tab on a thread: after a dropped socket it resumes from its last seq, as the page script does."""

    def __init__(self, stream: "Stream", port: int) -> None:
        self.stream, self.port = stream, port
        self.seqs: list[int] = []
        self.texts: dict[str, list[str]] = defaultdict(list)
        self.ready = asyncio.Event()
        self.socket: WireSocket | None = None
        self.drops = self.resets = 0

    @property
    def cursor(self) -> int:
        return max(self.seqs, default=0)

    async def run(self, gate: asyncio.Semaphore) -> None:
        """Keep a socket open on the thread until cancelled."""
        while True:
            try:
                async with gate:
                    self.socket = await open_socket(
                        port=self.port,
                        thread_id=self.stream.thread_id,
                        after=self.cursor,
                        cookie=self.stream.cookie,
                        on_message=self.on_message,
                    )
                await self.socket.closed
            except (OSError, TimeoutError):
                pass
            finally:
                if self.socket is not None:
                    self.socket.close()
            self.socket = None
            self.drops += 1
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)

    def on_message(self, message: bytes) -> None:
        self.on_frame(json.loads(message))

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind, now = frame["type"], time.time()
        if kind in LOG_EVENT_TYPES:
            self.seqs.append(frame["seq"])
            if kind == "delta":
                self.texts[frame["message_id"]].append(frame["text"])
            self.stream.load.on_delivered(frame, now)
            if self is self.stream.sender:
                self.stream.on_sender_event(frame, now)
        elif kind == "ready":
            self.ready.set()
        elif kind == "reset":
            self.resets += 1
        elif kind == "error":
            self.stream.on_error(self, frame["code"])

    async def send(self, frame: dict[str, Any]) -> None:
        """Send on the current socket, waiting for one while the tab reconnects."""
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        while True:
            try:
                if self.socket is not None:
                    self.socket.send(json.dumps(frame))
                    return
            except ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("no socket to send on")
            await asyncio.sleep(0.05)

    def check(self, snapshot: dict[str, Any]) -> tuple[Counter[str], list[str]]:
        """Compare what this tab received with the thread's snapshot (I3, I4); describe what differs."""
        seen: set[int] = set()
        highest = out_of_order = 0
        for seq in self.seqs:
            if seq < highest and seq not in seen:
                out_of_order += 1
            seen.add(seq)
            highest = max(highest, seq)
        missing = sorted(set(range(1, snapshot["seq"] + 1)) - seen)
        mismatched = [
            message
            for message in snapshot["messages"]
            if message["role"] == "assistant" and "".join(self.texts[message["id"]]) != message["content"]
        ]
        counts = Counter(
            lost=len(missing),
            duplicated=len(self.seqs) - len(seen),
            out_of_order=out_of_order,
            text_mismatches=len(mismatched),
            reconnects=self.drops,
            resets=self.resets,
        )
        where = f"thread {self.stream.thread_id}, tab on port {self.port}"
        flaws = [f"{where}: missing seqs {missing[:10]} of 1..{snapshot['seq']}"] if missing else []
        for message in mismatched[:3]:
            rebuilt = "".join(self.texts[message["id"]])
            flaws.append(
                f"{where}: reply {message['id']} rebuilt {len(rebuilt)} chars, {len(message['content'])} stored"
            )
        if out_of_order or counts["duplicated"]:
            flaws.append(f"{where}: seqs received {self.seqs[:50]}")
        return counts, flaws
