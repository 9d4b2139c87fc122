"""Client-side probes that are not load: resume timing, idle sockets, and the floor's frame counting."""

import asyncio
import contextlib
import sys
import time
from typing import Any

from websockets.exceptions import WebSocketException

from .sockets import open_socket, read_line, wait_ready, write_line

# Handshakes in flight at once while opening many idle sockets.
OPENING_CONCURRENCY = 50


async def resume(plan: dict[str, Any]) -> dict[str, Any]:
    """Reconnect to a thread from each case's cursor, `repeats` times; time connect→ready and open→ready."""
    results = []
    for case in plan["cases"]:
        connect_ms, open_ms, events = [], [], 0
        for _ in range(case["repeats"]):
            started = time.perf_counter()
            async with open_socket(
                port=plan["port"], thread_id=plan["thread"], after=case["after"], cookie=plan["cookie"]
            ) as socket:
                opened = time.perf_counter()
                events = await wait_ready(socket)
                ready = time.perf_counter()
            connect_ms.append((ready - started) * 1000)
            open_ms.append((ready - opened) * 1000)
        results.append({**case, "events": events, "connect_to_ready_ms": connect_ms, "open_to_ready_ms": open_ms})
    return {"cases": results}


async def idle(plan: dict[str, Any]) -> dict[str, Any]:
    """Open one socket per stream (a thread and its owner's cookie) and hold them, idle, until told to `close`."""
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)
    stack = contextlib.AsyncExitStack()
    failed = 0

    async def open_one(stream: dict[str, str]) -> None:
        nonlocal failed
        async with gate:
            try:
                socket = await stack.enter_async_context(
                    open_socket(port=plan["port"], thread_id=stream["id"], after=0, cookie=stream["cookie"])
                )
                await wait_ready(socket)
            except (OSError, TimeoutError, ConnectionError, WebSocketException) as error:
                failed += 1
                print(f"idle socket on thread {stream['id']} failed: {error!r}", file=sys.stderr)

    async with stack:
        await asyncio.gather(*(open_one(stream) for stream in plan["streams"]))
        write_line({"type": "connected", "sockets": len(plan["streams"]) - failed})
        await read_line()  # `close`
    return {"opened": len(plan["streams"]) - failed, "failed": failed}


async def floor(plan: dict[str, Any]) -> dict[str, Any]:
    """Open `sockets` sockets on the floor's server; count the frames they get in the window after `go`."""
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)
    received = 0

    async def read(socket) -> None:
        nonlocal received
        with contextlib.suppress(WebSocketException):
            async for _ in socket:
                received += 1

    async def open_one(stack: contextlib.AsyncExitStack):
        async with gate:
            socket = open_socket(port=plan["port"], thread_id="floor", after=0, cookie="")
            return await stack.enter_async_context(socket)

    async with contextlib.AsyncExitStack() as stack:
        sockets = await asyncio.gather(*(open_one(stack) for _ in range(plan["sockets"])))
        readers = [asyncio.ensure_future(read(socket)) for socket in sockets]
        write_line({"type": "connected", "sockets": len(sockets)})
        start = (await read_line())["start"]  # `go`
        await asyncio.sleep(max(0.0, start + plan["warmup_s"] - time.time()))
        frames, cpu = received, time.process_time()
        await asyncio.sleep(max(0.0, start + plan["duration_s"] - time.time()))
        frames, cpu = received - frames, time.process_time() - cpu
        for reader in readers:
            reader.cancel()
    return {"frames": frames, "client_cpu_s": cpu}
