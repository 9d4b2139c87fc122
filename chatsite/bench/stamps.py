"""Emit times carried inside reply tokens: latency is measured without changing the protocol.

Each token of the benchmark provider is a space and a number, the time the provider
emitted it in microseconds modulo STAMP_MODULUS_US. A client that receives a `delta`
reads the numbers back and subtracts them from its receive time; both ends read the
same machine's wall clock. The text stays ordinary text, so the reply is stored,
replayed and rebuilt exactly like any other.
"""

import asyncio
import time
from collections.abc import AsyncIterator

# 1,000 s: a number stays short (at most 9 digits) and no latency comes near it, so
# the difference taken modulo the modulus is unambiguous.
STAMP_MODULUS_US = 1_000_000_000


def stamp_token(emitted_at: float) -> str:
    """Return the token emitted at wall-clock time `emitted_at` (seconds)."""
    return f" {int(emitted_at * 1_000_000) % STAMP_MODULUS_US}"


async def paced_tokens(count: int, tokens_per_second: float) -> AsyncIterator[str]:
    """Yield `count` stamped tokens at `tokens_per_second`, the first one interval from now.

    On a fixed schedule, each stamped with the time it was due rather than the time this
    coroutine got round to it: an upstream API's bytes arrive on time however busy the
    reading event loop is, and that lag belongs in token-to-screen latency.
    """
    interval_s = 1 / tokens_per_second
    loop = asyncio.get_running_loop()
    started, started_wall = loop.time(), time.time()
    for index in range(1, count + 1):
        due = index * interval_s
        await asyncio.sleep(max(0.0, started + due - loop.time()))
        yield stamp_token(started_wall + due)


def token_latencies_ms(text: str, received_at: float | None = None) -> list[float]:
    """Return the latency of every token in a delta's `text`, received at `received_at` (default: now)."""
    received_us = int((time.time() if received_at is None else received_at) * 1_000_000) % STAMP_MODULUS_US
    return [((received_us - int(word)) % STAMP_MODULUS_US) / 1000 for word in text.split()]
