"""What every benchmark client shares: opening a protocol v1 socket as a signed-in browser does,
and the JSON-lines conversation with the orchestrator. No Django here: client processes stay light.
"""

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from . import wire

# Handshakes run on a loaded machine, many at once.
OPEN_TIMEOUT_SECONDS = 30.0


async def open_socket(
    *, port: int, thread_id: str, after: int, cookie: str, on_message: Callable[[bytes], None]
) -> wire.WireSocket:
    """Open a socket on `thread_id` from cursor `after` as a browser opens it; each message goes to `on_message`."""
    return await wire.connect(
        port=port,
        path=f"/ws/threads/{thread_id}/?after={after}",
        origin=f"http://127.0.0.1:{port}",
        cookie=cookie,
        on_message=on_message,
        handshake_seconds=OPEN_TIMEOUT_SECONDS,
    )


async def read_line() -> dict[str, Any]:
    """Read the orchestrator's next JSON line from stdin (an empty dict at end of input)."""
    line = await asyncio.to_thread(sys.stdin.readline)
    return json.loads(line) if line.strip() else {}


def write_line(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class ReadyWatch:
    """A socket's `on_message` that counts the frames before `ready`.

    The frame is recognised by its prefix rather than decoded: events.encode() writes
    `type` first, and decoding 10,000 backlog frames would time the client, not the server.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def __call__(self, message: bytes) -> None:
        if self.ready.done():
            return
        if message.startswith(b'{"type":"ready"'):
            self.ready.set_result(self.frames)
        else:
            self.frames += 1

    async def wait(self, socket: wire.WireSocket) -> int:
        """Return how many frames came before `ready`; ConnectionError if the socket closed first."""
        await asyncio.wait({self.ready, socket.closed}, return_when=asyncio.FIRST_COMPLETED)
        if not self.ready.done():
            raise ConnectionError(f"closed before ready (code {socket.close_code})")
        return self.ready.result()
