"""Client-side probes that are not load: resume timing, idle sockets, and the floor's frame counting."""

import asyncio
import sys
import time
from typing import Any

from .sockets import ReadyWatch, open_socket, read_line, write_line

# Handshakes in flight at once while opening many idle sockets.
OPENING_CONCURRENCY = 50


async def resume(plan: dict[str, Any]) -> dict[str, Any]:
    """Reconnect to a thread from each case's cursor, `repeats` times; time connect→ready and open→ready."""
    results = []
    for case in plan["cases"]:
        connect_ms, open_ms, events = [], [], 0
        for _ in range(case["repeats"]):
            watch = ReadyWatch()
            started = time.perf_counter()
            socket = await open_socket(
                port=plan["port"],
                thread_id=plan["thread"],
                after=case["after"],
                cookie=plan["cookie"],
                on_message=watch,
            )
            try:
                opened = time.perf_counter()
                events = await watch.wait(socket)
                ready = time.perf_counter()
            finally:
                socket.close()
            connect_ms.append((ready - started) * 1000)
            open_ms.append((ready - opened) * 1000)
        results.append({**case, "events": events, "connect_to_ready_ms": connect_ms, "open_to_ready_ms": open_ms})
    return {"cases": results}


async def idle(plan: dict[str, Any]) -> dict[str, Any]:
    """Open one socket per stream (a thread and its owner's cookie) and hold them, idle, until told to `close`."""
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)
    sockets = []
    failed = 0

    async def open_one(stream: dict[str, str]) -> None:
        nonlocal failed
        async with gate:
            try:
                watch = ReadyWatch()
                socket = await open_socket(
                    port=plan["port"], thread_id=stream["id"], after=0, cookie=stream["cookie"], on_message=watch
                )
                sockets.append(socket)
                await watch.wait(socket)
            except (OSError, TimeoutError) as error:
                failed += 1
                print(f"idle socket on thread {stream['id']} failed: {error!r}", file=sys.stderr)

    try:
        await asyncio.gather(*(open_one(stream) for stream in plan["streams"]))
        write_line({"type": "connected", "sockets": len(plan["streams"]) - failed})
        await read_line()  # `close`
    finally:
        for socket in sockets:
            socket.close()
    return {"opened": len(plan["streams"]) - failed, "failed": failed}


async def floor(plan: dict[str, Any]) -> dict[str, Any]:
    """Open `sockets` sockets on the floor's server; count the frames they get in the window after `go`."""
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)
    received = 0

    def count(_message: bytes) -> None:
        nonlocal received
        received += 1

    async def open_one():
        async with gate:
            return await open_socket(port=plan["port"], thread_id="floor", after=0, cookie="", on_message=count)

    sockets = await asyncio.gather(*(open_one() for _ in range(plan["sockets"])))
    try:
        write_line({"type": "connected", "sockets": len(sockets)})
        start = (await read_line())["start"]  # `go`
        await asyncio.sleep(max(0.0, start + plan["warmup_s"] - time.time()))
        frames, cpu = received, time.process_time()
        await asyncio.sleep(max(0.0, start + plan["duration_s"] - time.time()))
        frames, cpu = received - frames, time.process_time() - cpu
    finally:
        for socket in sockets:
            socket.close()
    return {"frames": frames, "client_cpu_s": cpu}
