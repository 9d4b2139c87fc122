"""What every benchmark client shares: opening a protocol v1 socket as a signed-in browser does,
and the JSON-lines conversation with the orchestrator. No Django here: client processes stay light.
"""

import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

# Handshakes run on a loaded machine, many at once.
OPEN_TIMEOUT_SECONDS = 30.0


def open_socket(*, port: int, thread_id: str, after: int, cookie: str) -> connect:
    """Return a socket on `thread_id` from cursor `after`, opened as a browser opens it (await it, or `async with`)."""
    return connect(
        f"ws://127.0.0.1:{port}/ws/threads/{thread_id}/?after={after}",
        origin=Origin(f"http://127.0.0.1:{port}"),
        additional_headers={"Cookie": cookie},
        open_timeout=OPEN_TIMEOUT_SECONDS,
        max_size=None,
    )


async def read_line() -> dict[str, Any]:
    """Read the orchestrator's next JSON line from stdin (an empty dict at end of input)."""
    line = await asyncio.to_thread(sys.stdin.readline)
    return json.loads(line) if line.strip() else {}


def write_line(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def wait_ready(socket: ClientConnection) -> int:
    """Read frames until `ready`; return how many came before it.

    The frame is recognised by its prefix rather than decoded: events.encode() writes
    `type` first, and decoding 10,000 backlog frames would time the client, not the server.
    """
    frames = 0
    async for text in socket:
        if isinstance(text, str) and text.startswith('{"type":"ready"'):
            return frames
        frames += 1
    raise ConnectionError(f"closed before ready (code {socket.close_code})")
