"""The scale-out channel layer: Redis pub/sub fan-out, bounded per subscriber.

Subscribers only need fan-out: every web process's hub gets each round of log events,
and repairs from the database whatever it misses (I2, I3). So this is
channels_redis' pub/sub layer, where a group send is one PUBLISH, rather than its core
layer, which keeps a sorted set per channel in Redis and runs Lua scripts for about 25
commands per group send. It adds:

- a bound: each local channel queues at most `capacity` messages, and a subscriber that
  does not read loses the rest, repaired from the database later, instead of growing
  the process without bound (I10);
- timeouts, so a publish or subscribe against an unreachable Redis fails instead of hanging;
- `presence_update_many`, the rooms of streaming/presence.py: a sorted set per thread in Redis,
  many rooms updated in one round trip.

When Redis restarts, redis-py re-subscribes a process's channels and groups as soon as
its subscriber connection reconnects; what was published meanwhile is lost and repaired.
"""

import asyncio
import logging
import math
from typing import Any

from channels_redis import pubsub
from channels_redis.utils import _wrap_close, decode_hosts

from . import metrics

logger = logging.getLogger(__name__)

# A presence room's update: (room, members to touch with their expiry, members leaving).
RoomUpdate = tuple[str, dict[str, float], list[str]]

# Redis answers in well under a millisecond: a command without an answer after this long
# means an unreachable server, and failing lets the caller log it and go on.
REDIS_TIMEOUT_SECONDS = 2.0
DEFAULT_CAPACITY = 100


class BoundedQueue(asyncio.Queue):
    """A channel's local queue that drops what does not fit, logging once per overflow rather than per message."""

    def __init__(self, channel: str, capacity: int) -> None:
        super().__init__(maxsize=capacity)
        self.channel = channel
        self.overflowing = False
        self.overflowed_before = False

    def put_nowait(self, item: Any) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            metrics.CHANNEL_LAYER_DROPS.inc()
            if not self.overflowing:
                # A slow reader drops many messages in a row: one line when it starts.
                level = logging.DEBUG if self.overflowed_before else logging.WARNING
                logger.log(level, "channel %s is full (%d unread): dropping new messages", self.channel, self.maxsize)
                self.overflowing = self.overflowed_before = True
        else:
            self.overflowing = False


def _with_timeouts(hosts: list[dict]) -> list[dict]:
    timeouts = {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS, "socket_timeout": REDIS_TIMEOUT_SECONDS}
    return [timeouts | host for host in hosts]


def _raise_swallowed_cancel() -> None:
    """Raise the cancellation of the current task if a subscribe swallowed it.

    redis-py connects under `asyncio.wait_for`, which on Python 3.11 returns normally when
    the connection is made in the same loop turn as the task is cancelled, leaving the
    cancel pending but never raised. A stream whose reader left while it joined a group
    would then run on, holding the reader's stream slot.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _LoopLayer(pubsub.RedisPubSubLoopLayer):
    """The layer's state and connections for one event loop."""

    def __init__(self, hosts: list | None = None, *, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(hosts, **kwargs)
        self.capacity = capacity
        self._shards = [pubsub.RedisSingleShardConnection(host, self) for host in _with_timeouts(decode_hosts(hosts))]

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = BoundedQueue(channel, self.capacity)
        try:
            await self._get_shard(channel).subscribe(channel)
            _raise_swallowed_cancel()
        except BaseException:
            # Never subscribed, never received from: a queue left here would stay forever.
            del self.channels[channel]
            raise

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        _raise_swallowed_cancel()

    async def presence_update_many(self, updates: list[RoomUpdate], *, now: float) -> list[list[str]]:
        """Apply each (room, touch, leave) update; return who is left in each room, in one round trip per host.

        Per room: score `touch`'s members with their expiry, drop `leave`'s and the expired,
        and read the rest. One sorted set per room in Redis, shared by every web process: a
        process that dies stops renewing its members, whose scores then fall behind `now`,
        and the next update by anyone drops them. The key itself expires once nobody renews
        anything.
        """
        pipelines: dict[pubsub.RedisSingleShardConnection, Any] = {}
        # Per update: its shard, and the index of its ZRANGE's answer in that shard's pipeline.
        reads: list[tuple[pubsub.RedisSingleShardConnection, int]] = []
        for room, touch, leave in updates:
            key = f"{self.prefix}presence.{room}"
            shard = self._get_shard(key)
            if shard not in pipelines:
                shard._ensure_redis()
                pipelines[shard] = shard._redis.pipeline(transaction=False)
            pipeline = pipelines[shard]
            if touch:
                pipeline.zadd(key, touch)
            if leave:
                pipeline.zrem(key, *leave)
            pipeline.zremrangebyscore(key, "-inf", now)
            pipeline.zrange(key, 0, -1)
            reads.append((shard, len(pipeline) - 1))
            if touch:
                pipeline.expireat(key, math.ceil(max(touch.values())))
        answers = dict(
            zip(pipelines, await asyncio.gather(*(pipeline.execute() for pipeline in pipelines.values())), strict=True)
        )
        return [[member.decode() for member in answers[shard][index]] for shard, index in reads]


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """channels_redis' pub/sub layer with bounded channel queues, presence rooms and timeouts.

    CONFIG: `hosts` and `prefix` as channels_redis takes them, `capacity` (messages per
    local channel). A host given as a dict may set its own `socket_timeout` and
    `socket_connect_timeout` (REDIS_TIMEOUT_SECONDS otherwise).
    """

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        if loop not in self._layers:
            self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return self._layers[loop]

    async def group_send(self, group: str, message: dict) -> None:
        # A method here rather than the parent's __getattr__ proxy, which super() in a subclass does not reach.
        await self._get_layer().group_send(group, message)

    async def presence_update_many(self, updates: list[RoomUpdate], *, now: float) -> list[list[str]]:
        """Update presence rooms shared by every process; see `_LoopLayer.presence_update_many`."""
        return await self._get_layer().presence_update_many(updates, now=now)
