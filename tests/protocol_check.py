"""Every frame the suite receives is checked against its definition in streaming/protocol.py.

The WebSockets of the tests (ProtocolCommunicator, under tests/conftest.py's ThreadSocket),
the event-stream reader (tests/test_sse.py's HttpStream) and the clients of live servers
(`parse_frame`) pass each frame to `validate_frame`, so a frame that drifts from its type
fails every test that sees it.
"""

import json
from functools import cache
from typing import Any, get_args, get_type_hints

import jsonschema_rs
from channels.testing import WebsocketCommunicator

from streaming.protocol import ServerFrame
from threads.typeschema import json_schema


@cache
def frame_validators() -> dict[str, jsonschema_rs.Validator]:
    """Return the validator of each server frame, by the value of its `type`."""
    validators = {}
    for frame_type in get_args(ServerFrame):
        (name,) = get_args(get_type_hints(frame_type)["type"])
        validators[name] = jsonschema_rs.validator_for(json_schema(frame_type), validate_formats=True)
    return validators


def validate_frame(frame: dict[str, Any]) -> None:
    """Fail unless `frame` is a server frame exactly as its type defines it: keys, types, values, nothing more."""
    validator = frame_validators().get(frame.get("type"))
    assert validator is not None, f"no server frame has type {frame.get('type')!r}: {frame}"
    errors = [f"{error.message} at {list(error.instance_path)}" for error in validator.iter_errors(frame)]
    assert not errors, f"a {frame['type']} frame that does not match its definition: {errors}: {frame}"


def parse_frame(text: str | bytes) -> dict[str, Any]:
    """Return a server frame received as JSON text, once it is checked against its definition."""
    frame = json.loads(text)
    validate_frame(frame)
    return frame


class ProtocolCommunicator(WebsocketCommunicator):
    """A WebsocketCommunicator that checks every text frame the server sends against the protocol."""

    async def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        output = await super().receive_output(timeout)
        if output["type"] == "websocket.send" and output.get("text") is not None:
            parse_frame(output["text"])
        return output
