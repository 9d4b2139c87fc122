"""What a reader is handed: a protocol v1 frame, built once and shared by every reader of a thread.

No Django here: the web server's module (chatsite/daphne_server.py) imports it before
Django is set up.
"""

from dataclasses import dataclass, field
from typing import Any

# The ASGI scope extension under which a web server may offer `send_frame(frame)`: a
# coroutine that sends a Frame's `data` as a WebSocket text message, as `websocket.send`
# would, but from bytes it builds once per frame rather than once per socket (a server
# sends frames unmasked, so they are the same bytes for every socket).
SEND_FRAME_EXTENSION = "chatsite.send_frame"
# The same server may offer `send_frame_now(frame) -> bool` beside it: send the frame at once
# if the socket takes it without anything to wait for (open, nothing unsent before it), and
# say whether it did. A reader waiting for live frames has the hub hand them to it so
# (streaming/hub.py's Inbox.taker), without waking the reader's task for each one.
SEND_FRAME_NOW_EXTENSION = "chatsite.send_frame_now"


@dataclass(slots=True)
class Frame:
    """A protocol v1 frame: its type, its JSON text, and the seq it brings a reader to (log events, ready, reset).

    Shared by every reader of a thread, and read-only to them: only the web server writes
    `prepared`, its WebSocket message of the frame, on the first send, for the other sockets.
    """

    type: str
    data: str
    seq: int | None = None
    prepared: Any = field(default=None, compare=False, repr=False)
