"""Emit times carried inside reply tokens: latency is measured without changing the protocol.

Each token of the benchmark provider is a space and a number, the time the provider
emitted it in microseconds modulo STAMP_MODULUS_US. A client that receives a `delta`
reads the numbers back and subtracts them from its receive time; both ends read the
same machine's wall clock. The text stays ordinary text, so the reply is stored,
replayed and rebuilt exactly like any other.
"""

import time

# 1,000 s: a number stays short (at most 9 digits) and no latency comes near it, so
# the difference taken modulo the modulus is unambiguous.
STAMP_MODULUS_US = 1_000_000_000


def stamp_token(emitted_at: float) -> str:
    """Return the token emitted at wall-clock time `emitted_at` (seconds)."""
    return f" {int(emitted_at * 1_000_000) % STAMP_MODULUS_US}"


def token_latencies_ms(text: str, received_at: float | None = None) -> list[float]:
    """Return the latency of every token in a delta's `text`, received at `received_at` (default: now)."""
    received_us = int((time.time() if received_at is None else received_at) * 1_000_000) % STAMP_MODULUS_US
    return [((received_us - int(word)) % STAMP_MODULUS_US) / 1000 for word in text.split()]
