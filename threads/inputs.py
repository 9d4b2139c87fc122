"""Parsing of client-supplied values shared by the HTTP API and the WebSocket."""

import json
from uuid import UUID

from streaming.errors import BadRequest


def parse_json_object(text: str | bytes, *, what: str) -> dict:
    """Return the JSON object of a request body or a WebSocket frame; BadRequest for anything else.

    Its strings must be storable: PostgreSQL (and SQLite's UTF-8) cannot hold NUL or an
    unpaired surrogate, so such input is refused here rather than failing on write.
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        raise BadRequest(f"The {what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest(f"The {what} must be a JSON object.")
    if not storable_text(value):
        raise BadRequest(f"The {what} must not contain NUL characters or unpaired surrogates (\\ud800).")
    return value


def storable_text(value: object) -> bool:
    """Return whether every string in a decoded JSON value can be stored: no NUL, no unpaired surrogate.

    Iterative, so a body nested as deep as the decoder allows cannot exhaust the stack here.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or not (item.isascii() or is_encodable(item)):
                return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def is_encodable(text: str) -> bool:
    """Return whether `text` is valid Unicode: JSON's `\\ud800` escapes decode to unpaired surrogates, which are not."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


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


def parse_thread_id(value: object) -> UUID:
    """Return the thread id a chat API body names (a new one starts a thread); BadRequest for anything but a UUID."""
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise BadRequest("id must be a thread id (a UUID); a new one starts a thread.")


def parse_approval(body: dict) -> tuple[str, bool]:
    """Return the tool call an approval names and whether it is approved; BadRequest for anything else."""
    tool_call_id, approved = body.get("tool_call_id"), body.get("approved")
    if not isinstance(tool_call_id, str) or not 0 < len(tool_call_id) <= 200:
        raise BadRequest("tool_call_id must be the id of a tool call (a string).")
    if not isinstance(approved, bool):
        raise BadRequest("approved must be true (run the call) or false (deny it).")
    return tool_call_id, approved
