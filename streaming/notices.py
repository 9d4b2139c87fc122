"""Notices to subscribers that are not log events: a thread was renamed, an API token was revoked.

They travel on the channel layer like log events (broadcast.py) and obey the same rule
(I2): each is sent only once its change has committed, and is a hint that may be lost.
A lost rename leaves an open tab with the old title until it loads the thread again; a
lost revocation is caught by the subscription's own periodic check of its token
(streaming/subscription.py), so a revoked token never streams for long.

Subscribers tell these messages from log events by their `type`.
"""
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from threads.models import Thread

from .events import encode, thread_group_name

logger = logging.getLogger(__name__)

# Channel-layer message types, as subscriptions dispatch on them.
THREAD_RENAMED = "thread.renamed"
TOKEN_REVOKED = "token.revoked"


def token_group_name(token_id: int) -> str:
    """Return the channel-layer group of the streams opened with an API token."""
    return f"token.{token_id}"


def thread_frame(thread: Thread) -> str:
    """Return the `thread` control frame (a protocol v1 extension, without seq): the thread's id and title."""
    return encode({"type": "thread", "id": str(thread.id), "title": thread.title})


async def _agroup_send(group: str, message: dict[str, Any]) -> None:
    try:
        await get_channel_layer().group_send(group, message)
    except Exception:
        logger.warning("channel layer send to %s failed; the notice is lost", group, exc_info=True)


def _send_on_commit(group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: async_to_sync(_agroup_send)(group, message))


def publish_thread_renamed_on_commit(thread: Thread) -> None:
    """Send the `thread` frame with the new title to the thread's subscribers once the transaction commits."""
    _send_on_commit(thread_group_name(thread.id), {"type": THREAD_RENAMED, "frame": thread_frame(thread)})


def publish_token_revoked_on_commit(token_id: int) -> None:
    """Tell every stream opened with the token to end, once the transaction commits."""
    _send_on_commit(token_group_name(token_id), {"type": TOKEN_REVOKED})
