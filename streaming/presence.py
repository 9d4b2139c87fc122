"""Who is watching a thread now: people, not sockets, correct across web processes.

Every subscription that counts a person (the product decides who: a signed-in reader of a
WebSocket or an event stream) is a *watcher* in its thread's room: a member
`<watcher id> <person as JSON>` with an expiry, which it renews every
STREAM_PRESENCE_HEARTBEAT_SECONDS and which lapses after EXPIRY_HEARTBEATS of them. A
watcher that ends leaves at once and tells the thread's subscribers (a `presence.changed`
notice on the thread's group, streaming/broadcast.py); one whose web process died simply
stops renewing, and drops out at the next read by anyone after its expiry, so no entry
stays behind a dead process. Each watcher reads the room at every notice and heartbeat,
and sends its reader the `presence` frame when the people in it changed.

With the Redis channel layer the room is a sorted set in Redis scored by expiry, shared
by every web process (`presence_update_many` in streaming/layers.py); with the in-memory
layer, one process only, it is a dict here. A process's updates of one loop turn go to
Redis together, one round trip for all their rooms: the hub's timer wakes the watchers
whose heartbeats fall due together at once (streaming/hub.py), so a process of hundreds
of watchers renews them in a few round trips a second rather than one each.
"""

import asyncio
import functools
import json
import logging
import time
import uuid
from typing import Protocol, runtime_checkable
from uuid import UUID

from django.conf import settings

from .broadcast import apublish_presence_changed, channel_layer
from .events import encode
from .protocol import Person

logger = logging.getLogger(__name__)

# A watcher not renewed for this many heartbeats is gone (its process died).
EXPIRY_HEARTBEATS = 3

# The in-memory layer's rooms: room -> member -> expiry (time.time()).
_local_rooms: dict[str, dict[str, float]] = {}


def _local_update(room: str, *, touch: dict[str, float], leave: list[str], now: float) -> list[str]:
    members = _local_rooms.setdefault(room, {})
    members.update(touch)
    for member in leave:
        members.pop(member, None)
    for member, expiry in list(members.items()):
        if expiry <= now:
            del members[member]
    if not members:
        del _local_rooms[room]
    return list(members)


def people_in(members: list[str]) -> list[Person]:
    """Return the people of a room's members, each once however many watchers they have, by name."""
    people: dict[int, Person] = {}
    for member in members:
        found = _member_person(member)
        people[found["id"]] = found
    return sorted(people.values(), key=lambda person: (person["name"], person["id"]))


@functools.lru_cache(maxsize=4096)
def _member_person(member: str) -> Person:
    # A room is read at every heartbeat of each of its watchers, its members rarely changed since.
    _, _, person = member.partition(" ")
    found: Person = json.loads(person)
    return found


@runtime_checkable
class SharedRooms(Protocol):
    """A channel layer whose presence rooms every process shares (streaming/layers.py)."""

    async def presence_update_many(
        self, updates: list[tuple[str, dict[str, float], list[str]]], *, now: float
    ) -> list[list[str]]: ...


class _RoomUpdates:
    """The room updates one event loop asked for in one turn, sent to the layer together at its end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: SharedRooms) -> None:
        self.layer = layer
        self.asked: list[tuple[str, dict[str, float], list[str], asyncio.Future[list[str]]]] = []
        loop.call_soon(self._send)

    def _send(self) -> None:
        del _room_updates[asyncio.get_running_loop()]
        sending = asyncio.ensure_future(self._send_all())
        _sending.add(sending)
        sending.add_done_callback(_sending.discard)

    async def _send_all(self) -> None:
        try:
            rooms = await self.layer.presence_update_many(
                [(room, touch, leave) for room, touch, leave, _ in self.asked], now=time.time()
            )
        except Exception as error:
            for *_, answer in self.asked:
                if not answer.done():
                    answer.set_exception(error)
            return
        for (*_, answer), members in zip(self.asked, rooms, strict=True):
            if not answer.done():  # its watcher may have been cancelled meanwhile
                answer.set_result(members)


# Per event loop, the updates of its current turn, while there are any.
_room_updates: dict[asyncio.AbstractEventLoop, _RoomUpdates] = {}
# The updates on their way to the layer, held so that they run to the end.
_sending: set[asyncio.Task] = set()


async def _shared_room_update(layer: SharedRooms, room: str, *, touch: dict[str, float], leave: list[str]) -> list[str]:
    """Update a room shared by every process, with the other updates of this loop turn; return its members."""
    loop = asyncio.get_running_loop()
    updates = _room_updates.get(loop)
    if updates is None:
        updates = _room_updates[loop] = _RoomUpdates(loop, layer)
    answer: asyncio.Future[list[str]] = loop.create_future()
    updates.asked.append((room, touch, leave, answer))
    return await answer


class Watcher:
    """One subscription's place in its thread's room."""

    def __init__(self, thread_id: UUID, person: Person | None) -> None:
        """Watch `thread_id`'s room: as `person`, or unseen (None) to only hear who is there."""
        self.thread_id = thread_id
        self.room = str(thread_id)
        self.member = f"{uuid.uuid4().hex} {encode(person)}" if person is not None else None
        self.heartbeat_seconds = settings.STREAM_PRESENCE_HEARTBEAT_SECONDS
        self.people: list[Person] | None = None  # as last told to the reader

    async def _update(self, *, leave: bool = False) -> list[Person] | None:
        """Renew (or end) this watcher and read the room; None when the room cannot be reached.

        Presence is a hint like every live message: with Redis unreachable the stream goes
        on, the room is read again at the next heartbeat, and a lost leave is an expiry.
        """
        try:
            return await self._update_room(leave=leave)
        except Exception:
            logger.warning("thread %s: presence room unreachable; trying again at the next heartbeat", self.room)
            return None

    async def _update_room(self, *, leave: bool) -> list[Person]:
        now = time.time()
        touch, gone = {}, []
        if self.member is not None:
            if leave:
                gone.append(self.member)
            else:
                touch[self.member] = now + EXPIRY_HEARTBEATS * self.heartbeat_seconds
        layer = channel_layer()
        if isinstance(layer, SharedRooms):
            members = await _shared_room_update(layer, self.room, touch=touch, leave=gone)
        else:
            members = _local_update(self.room, touch=touch, leave=gone, now=now)
        return people_in(members)

    async def join(self) -> list[Person]:
        """Enter the room, tell the thread's other watchers, and return who is there."""
        self.people = await self._update() or []
        if self.member is not None:
            await apublish_presence_changed(self.thread_id)
        return self.people

    async def renew(self) -> list[Person] | None:
        """Renew this watcher and read the room: return the people if they changed since last told, else None."""
        people = await self._update()
        if people is None or people == self.people:
            return None
        self.people = people
        return people

    async def leave(self) -> None:
        """Leave the room at once and tell the thread's other watchers."""
        if self.member is not None:
            await self._update(leave=True)
            await apublish_presence_changed(self.thread_id)
