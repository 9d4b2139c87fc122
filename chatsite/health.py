"""Probes for load balancers and orchestrators.

`/healthz` answers while the process serves requests (liveness: restart me if not).
`/readyz` answers 200 only when this process can do its work: reach the database,
round-trip a message through the channel layer, and, when it runs one, keep its
inline worker loop turning (readiness: send me no traffic if not).
"""

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from streaming.broadcast import channel_layer
from streaming.inline import inline_worker

logger = logging.getLogger(__name__)

# A check that hangs fails: a probe must answer before the orchestrator gives up on it.
CHECK_TIMEOUT_SECONDS = 3.0
# An idle worker loop comes round every STREAM_WORKER_POLL_SECONDS; a few missed rounds mean it is stuck.
WORKER_STALE_POLLS = 3


class CheckFailed(Exception):
    pass


@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the process serves requests, touching nothing else."""
    return JsonResponse({"status": "ok"})


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def check_database() -> str:
    # Thread-sensitive, like every ORM call of a request: the connection is closed when the request ends.
    await sync_to_async(_database_ping)()
    return "ok"


@dataclass(frozen=True)
class _ProbeChannel:
    layer: object  # the channel layer the channel was made on
    name: str
    lock: asyncio.Lock


# One probe channel per event loop, reused: the Redis pub/sub layer keeps a subscription
# for every channel made until a receive on it is cancelled, so a fresh one per probe would
# pile them up.
_probe_channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ProbeChannel] = weakref.WeakKeyDictionary()


async def check_channel_layer() -> str:
    """Send a message to this process's probe channel and read it back."""
    layer = channel_layer()
    loop = asyncio.get_running_loop()
    probe = _probe_channels.get(loop)
    if probe is None or probe.layer is not layer:
        probe = _probe_channels[loop] = _ProbeChannel(layer, await layer.new_channel(), asyncio.Lock())
    async with probe.lock:
        nonce = uuid.uuid4().hex
        await layer.send(probe.name, {"type": "health.ping", "nonce": nonce})
        try:
            while (await layer.receive(probe.name)).get("nonce") != nonce:
                pass  # a ping left behind by an earlier probe
        except asyncio.CancelledError:
            # A cancelled receive unsubscribes the channel: the next probe makes a new one.
            _probe_channels.pop(loop, None)
            raise
    return "ok"


async def check_worker() -> str:
    """Check that this event loop's inline worker came round recently (when STREAM_INLINE_WORKER is on)."""
    if not settings.STREAM_INLINE_WORKER:
        return "off"
    worker = inline_worker()
    if worker is None or worker.looped_at is None:
        raise CheckFailed("not started yet")
    quiet_s = time.monotonic() - worker.looped_at
    if quiet_s > WORKER_STALE_POLLS * settings.STREAM_WORKER_POLL_SECONDS:
        raise CheckFailed(f"the loop last came round {quiet_s:.1f}s ago")
    return "ok"


CHECKS: dict[str, Callable[[], Awaitable[str]]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "worker": check_worker,
}


async def _run_check(name: str, check: Callable[[], Awaitable[str]]) -> tuple[str, bool]:
    """Return the check's outcome for the response body and whether it passed."""
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS), True
    except CheckFailed as error:
        return f"failed: {error}", False
    except Exception as error:  # an unreachable dependency means "not ready", never a crash
        logger.warning("readiness check %s failed", name, exc_info=True)
        # The class name only: exception texts can name hosts and credentials.
        return f"failed: {type(error).__name__}", False


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """Run every check at once; answer 200 when all pass, else 503 naming the failing ones."""
    outcomes = await asyncio.gather(*(_run_check(name, check) for name, check in CHECKS.items()))
    checks = {name: outcome for name, (outcome, _) in zip(CHECKS, outcomes, strict=True)}
    failing = [name for name, (_, passed) in zip(CHECKS, outcomes, strict=True) if not passed]
    body = {"status": "unavailable" if failing else "ok", "checks": checks, "failing": failing}
    return JsonResponse(body, status=503 if failing else 200)
