"""Parsing of client-supplied values shared by the HTTP API and the WebSocket."""
from uuid import UUID

from .errors import BadRequest


def parse_client_id(value: object) -> UUID | None:
    """Return the send's idempotency key (I7), or None when the client sent none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("client_id must be a UUID string.")
    try:
        return UUID(value)
    except ValueError:
        raise BadRequest("client_id must be a UUID string.") from None
