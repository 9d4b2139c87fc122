"""The protocol's one definition (streaming/protocol.py): the frame checks the suite relies on, and its copies."""

import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import strategies as st

from chatsite.management.commands.protocoljs import protocol_module, protocol_module_path
from streaming.events import delta_event, encode, encode_delta
from streaming.protocol import CloseCode, EndEvent, SendFrame
from threads.typeschema import json_schema

from .protocol_check import validate_frame

MESSAGE_ID = str(uuid.uuid4())
END = {
    "type": "end",
    "seq": 9,
    "message_id": MESSAGE_ID,
    "status": "complete",
    "model": "scripted",
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 12, "output_tokens": 40},
    "error": None,
}


def test_a_frame_as_defined_passes():
    """An `end` event with every field as its type says is accepted."""
    validate_frame(END)
    validate_frame({"type": "ready", "seq": 0})


@pytest.mark.parametrize(
    "frame, complaint",
    [
        ({key: value for key, value in END.items() if key != "usage"}, "usage"),
        (END | {"extra": 1}, "extra"),
        (END | {"seq": "9"}, '"9"'),
        (END | {"seq": -1}, "-1"),
        (END | {"status": "streaming"}, "streaming"),
        (END | {"message_id": "not-a-uuid"}, "uuid"),
        (END | {"error": {"code": "oops", "detail": "…"}}, "oops"),
        (END | {"usage": {"input_tokens": 1}}, "output_tokens"),
        ({"type": "pong", "seq": 1}, "seq"),
        ({"type": "welcome"}, "welcome"),
    ],
)
def test_a_frame_that_drifts_from_its_type_fails(frame, complaint):
    """A missing or unknown key, a wrong type, a value outside its Literal or enum, an unknown type: each fails."""
    with pytest.raises(AssertionError, match=complaint):
        validate_frame(frame)


def test_not_required_keys_are_optional_and_the_rest_required():
    """A TypedDict's NotRequired keys are left out of `required`; every key is listed, and no other allowed."""
    schema = json_schema(SendFrame)
    assert schema["required"] == ["type", "content"] and schema["additionalProperties"] is False
    assert schema["properties"]["client_id"] == {"type": ["string", "null"], "format": "uuid"}
    assert json_schema(EndEvent)["properties"]["status"] == {"enum": ["complete", "cancelled", "failed"]}


def test_the_browser_module_agrees_with_the_enums():
    """static/chat/protocol.js, as checked in, is what `manage.py protocoljs` makes of streaming/protocol.py."""
    assert protocol_module_path().read_text() == protocol_module()
    call_command("protocoljs", "--check")
    for code in CloseCode:
        assert f"  {code.name}: {code.value},\n" in protocol_module()


def test_a_stale_browser_module_fails_the_check(tmp_path):
    """A module whose codes differ from the enums fails `protocoljs --check`; writing it again makes it agree."""
    stale = tmp_path / "protocol.js"
    stale.write_text(protocol_module().replace("4401", "4400"))
    with pytest.raises(CommandError, match="disagrees"):
        call_command("protocoljs", "--check", output=stale)
    call_command("protocoljs", output=stale)
    call_command("protocoljs", "--check", output=stale)


@given(seq=st.integers(min_value=1, max_value=2**63 - 1), message_id=st.uuids(), text=st.text())
def test_a_delta_written_by_its_template_is_the_delta_event_encoded(seq, message_id, text):
    """`encode_delta` skips building the event: its bytes must be the event's, whatever the text holds."""
    written = encode_delta(seq, message_id, text)

    assert written == encode(delta_event(seq, message_id, text))
    assert json.loads(written) == {"type": "delta", "seq": seq, "message_id": str(message_id), "text": text}
    validate_frame(json.loads(written))
