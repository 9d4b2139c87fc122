"""The floor phase's application: the web process with nothing behind daphne but a timer per socket.

Every WebSocket, whatever its path, gets a frame the size and shape of a live `delta`
every FLOOR_FRAME_INTERVAL_MS; any HTTP request gets 200. What daphne spends serving it
is what the web server alone costs per frame, below anything the application does: no
Django, no channel layer, no subscription. No imports from the project either, so the
process holds only daphne.
"""

import asyncio
import os

# A delta as a 40 ms flush at 50 tokens/s carries it: seq, message id, a few tokens of text.
FRAME = '{"type":"delta","seq":%d,"message_id":"0b8e00b2-9c1f-4e5a-8d3b-2f6a7c9e1d40","text":"lorem ipsum dolor "}'


async def application(scope: dict, receive, send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"floor"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    frames = asyncio.ensure_future(_send_frames(send, int(os.environ["FLOOR_FRAME_INTERVAL_MS"]) / 1000))
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        frames.cancel()


async def _send_frames(send, interval_s: float) -> None:
    """Send a frame every `interval_s`, on a fixed schedule: a late frame does not push back the next."""
    loop = asyncio.get_running_loop()
    due, seq = loop.time(), 0
    while True:
        due += interval_s
        await asyncio.sleep(max(0.0, due - loop.time()))
        seq += 1
        await send({"type": "websocket.send", "text": FRAME % seq})
