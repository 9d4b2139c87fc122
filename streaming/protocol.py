"""WebSocket protocol v1 (DESIGN.md §4, with the README's extensions), defined once.

Every frame is a TypedDict here: `events.py` builds frames as these types and encodes
them, `threads/openapi.py` derives the HTTP API's schemas from them, `manage.py
protocoljs` writes the close and error codes into the browser client's
`static/chat/protocol.js`, and the test suite checks every frame its sockets receive
against them. A new field or frame starts here.
"""

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Literal, NotRequired, TypedDict

from django.db import models


@dataclass(frozen=True)
class SchemaHint:
    """JSON Schema keywords a field meets beyond its Python type."""

    format: str | None = None
    minimum: int | None = None
    description: str | None = None


UuidText = Annotated[str, SchemaHint(format="uuid")]
Timestamp = Annotated[str, SchemaHint(format="date-time")]
# A position in a thread's log: 0 before its first event.
Seq = Annotated[int, SchemaHint(minimum=0)]


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(models.TextChoices):
    COMPLETE = "complete"
    STREAMING = "streaming"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ErrorCode(StrEnum):
    """The codes of `error` frames, failed replies and HTTP error bodies alike."""

    BAD_REQUEST = "bad_request"
    BUSY = "busy"
    TOO_LONG = "too_long"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    PROVIDER_ERROR = "provider_error"
    INTERRUPTED = "interrupted"
    NOT_RUNNING = "not_running"  # extension: a cancel with nothing running
    STREAM_ENDED = "stream_ended"  # extension: a resumable stream asked for after its reply ended (HTTP 410)
    # Extensions for agent replies: a reply that made CHAT_MAX_TOOL_STEPS model calls and wanted
    # more; a tool call that may have run when its worker died and must not run twice; an
    # approval for a tool call that is not waiting for one.
    TOOL_STEPS_EXCEEDED = "tool_steps_exceeded"
    TOOL_UNCERTAIN = "tool_uncertain"
    NO_APPROVAL_PENDING = "no_approval_pending"


class CloseCode(IntEnum):
    """The codes a server closes a WebSocket with; the browser client retries all but the first three."""

    NOT_SIGNED_IN = 4401  # also an unknown or revoked API token
    NOT_ALLOWED = 4403  # also: the person's access to the thread ended (removed, link revoked)
    NOT_FOUND = 4404  # another person's thread answers the same
    TOO_SLOW = 4008  # the client did not read: reconnect with your cursor (I10)
    TOO_MANY_STREAMS = 4429  # extension, as HTTP's 429: CHAT_MAX_STREAMS_PER_USER are open
    SERVER_ERROR = 4500  # extension: the server failed (its database restarting, say); reconnect with your cursor


# Closes that no retry can fix.
FINAL_CLOSE_CODES = (CloseCode.NOT_SIGNED_IN, CloseCode.NOT_ALLOWED, CloseCode.NOT_FOUND)


class ErrorObject(TypedDict):
    """Why a reply failed or a request was refused."""

    code: ErrorCode
    detail: str


class Usage(TypedDict):
    input_tokens: int | None
    output_tokens: int


class ReplyOutcome(TypedDict):
    """How a reply ended: its `end` event and its snapshots carry this (all but `status` are extensions)."""

    model: str
    stop_reason: str | None
    usage: Usage | None
    error: ErrorObject | None


class Person(TypedDict):
    """Extension: a person as the product names them: the author of a user message, a watcher in `presence`."""

    id: int
    name: str


class Versions(TypedDict):
    """Extension, in snapshots: a message's versions, the messages of its role under its parent, oldest first."""

    index: Annotated[int, SchemaHint(minimum=0, description="this message's place in `ids`")]
    ids: list[UuidText]


class UserMessage(TypedDict):
    """A person's message, as the `message` event and snapshots carry it."""

    id: UuidText
    role: Literal[MessageRole.USER]
    content: str
    status: MessageStatus
    created_at: Timestamp
    client_id: Annotated[UuidText | None, SchemaHint(description="the send's idempotency key (I7)")]
    # Extension: null for messages written before authors were recorded, or whose sender was deleted.
    author: Annotated[Person | None, SchemaHint(description="who sent it (shared threads have several people)")]
    parent_id: Annotated[
        UuidText | None, SchemaHint(description="extension: the message this one follows; null for a first message")
    ]
    on_path: NotRequired[
        Annotated[bool, SchemaHint(description="extension, in snapshots: on the thread's active path (shown)")]
    ]
    versions: NotRequired[Versions]


# A reply's parts (extension): what an agent reply holds besides its text, in the order it was written.


class TextPart(TypedDict):
    """A run of the reply's text: its `delta` events between other parts."""

    type: Literal["text"]
    text: str


class ThinkingPart(TypedDict):
    """The model's extended thinking, streamed by `part_delta` events; the signature comes with its `part_end`."""

    type: Literal["thinking"]
    text: str
    signature: str | None
    # A redacted_thinking block: the API's encrypted thinking, shown as none (empty `text`), sent back as it came.
    redacted_data: NotRequired[
        Annotated[str, SchemaHint(description="extension: the encrypted data of thinking the model gave redacted")]
    ]


class ToolCallPart(TypedDict):
    """A tool call the model made: `called` when logged, `running` once its run began (its `part_end`)."""

    type: Literal["tool_call"]
    id: str
    name: str
    input: dict[str, object]
    state: Literal["called", "running"]
    # A tool loop is one assistant turn, whose model calls the API asks to keep one thinking setting.
    thinking: NotRequired[
        Annotated[
            bool,
            SchemaHint(description="extension: the model call that made it asked for thinking; later ones keep it"),
        ]
    ]


class ToolResultPart(TypedDict):
    """What a tool call gave back, or why it failed (`is_error`); a denied call's result says so."""

    type: Literal["tool_result"]
    tool_call_id: str
    name: str
    output: object
    is_error: bool


class ApprovalPart(TypedDict):
    """A tool call waiting for a person's decision (`requested`), then decided by its `part_end`.

    `retry` marks a call that may have run already (its worker died during it): approving it runs it again.
    """

    type: Literal["approval"]
    tool_call_id: str
    state: Literal["requested", "approved", "denied"]
    retry: bool


Part = TextPart | ThinkingPart | ToolCallPart | ToolResultPart | ApprovalPart


class AssistantMessage(ReplyOutcome):
    """A reply, as snapshots carry it: one in progress has its text so far."""

    id: UuidText
    role: Literal[MessageRole.ASSISTANT]
    content: str
    status: MessageStatus
    created_at: Timestamp
    parent_id: Annotated[
        UuidText | None, SchemaHint(description="extension: the message this one follows; null for a first message")
    ]
    on_path: NotRequired[
        Annotated[bool, SchemaHint(description="extension, in snapshots: on the thread's active path (shown)")]
    ]
    versions: NotRequired[Versions]
    # Extension: an agent reply's parts, oldest first (a reply of text alone has none: its text is `content`).
    parts: NotRequired[list[Part]]


MessagePayload = UserMessage | AssistantMessage


class StartedReply(TypedDict):
    """A reply as its `start` event carries it: only what is fixed at its start, so a replay matches the live event."""

    id: UuidText
    role: Literal[MessageRole.ASSISTANT]
    content: Literal[""]
    status: Literal[MessageStatus.STREAMING]
    created_at: Timestamp
    parent_id: Annotated[
        UuidText | None, SchemaHint(description="extension: the message this one follows; null for a first message")
    ]


# Server → client, log events: each carries its seq.


class MessageEvent(TypedDict):
    type: Literal["message"]
    seq: Seq
    message: UserMessage


class StartEvent(TypedDict):
    type: Literal["start"]
    seq: Seq
    message: StartedReply


class DeltaEvent(TypedDict):
    """A piece of a reply's text: a message's text is its deltas' texts in seq order."""

    type: Literal["delta"]
    seq: Seq
    message_id: UuidText
    text: str


class EndEvent(ReplyOutcome):
    type: Literal["end"]
    seq: Seq
    message_id: UuidText
    status: Literal[MessageStatus.COMPLETE, MessageStatus.CANCELLED, MessageStatus.FAILED]


class SwitchEvent(TypedDict):
    """Extension: another version of a message was chosen, so the active path below its parent is now `path`.

    A new message (a `message` or `start` event) goes on the path after its parent the same way,
    without a `switch`: the path is what the log says, replayed from any cursor.
    """

    type: Literal["switch"]
    seq: Seq
    message_id: UuidText
    parent_id: UuidText | None
    path: Annotated[list[UuidText], SchemaHint(description="the active path from message_id down, oldest first")]


class PartStartEvent(TypedDict):
    """Extension: a part of an agent reply begins, at `index` in its parts (text parts count too)."""

    type: Literal["part_start"]
    seq: Seq
    message_id: UuidText
    index: int
    part: Part


class PartDeltaEvent(TypedDict):
    """Extension: text added to the part at `index` (a thinking part)."""

    type: Literal["part_delta"]
    seq: Seq
    message_id: UuidText
    index: int
    text: str


class PartEndEvent(TypedDict):
    """Extension: the part at `index` is final (or, for a tool call, begins to run): `part` replaces it whole."""

    type: Literal["part_end"]
    seq: Seq
    message_id: UuidText
    index: int
    part: Part


LogEvent = (
    MessageEvent | StartEvent | DeltaEvent | EndEvent | SwitchEvent | PartStartEvent | PartDeltaEvent | PartEndEvent
)


# Server → client, control frames: no seq of their own.


class ReadyFrame(TypedDict):
    """The backlog is sent: caught up to `seq`."""

    type: Literal["ready"]
    seq: Seq


class ResetFrame(TypedDict):
    """The cursor cannot be served: a full snapshot at `seq` replaces the client's state."""

    type: Literal["reset"]
    seq: Seq
    messages: list[MessagePayload]
    # Extension: the newest messages that fit one frame (STREAM_RESET_MAX_BYTES); the earlier ones are
    # paged in over HTTP with this as `before`. None when the frame holds the whole thread.
    next: int | None


class ErrorFrame(TypedDict):
    """A client frame (or the cursor) was refused; the socket stays open."""

    type: Literal["error"]
    code: ErrorCode
    detail: str


class PongFrame(TypedDict):
    type: Literal["pong"]


class ThreadFrame(TypedDict):
    """Extension: the thread was renamed."""

    type: Literal["thread"]
    id: UuidText
    title: str


class PresenceFrame(TypedDict):
    """Extension: the people watching the thread now (each once, however many tabs they have open)."""

    type: Literal["presence"]
    people: list[Person]


ControlFrame = ReadyFrame | ResetFrame | ErrorFrame | PongFrame | ThreadFrame | PresenceFrame
ServerFrame = LogEvent | ControlFrame


# Client → server.


class SendFrame(TypedDict):
    type: Literal["send"]
    content: str
    client_id: NotRequired[UuidText | None]


class CancelFrame(TypedDict):
    type: Literal["cancel"]


class PingFrame(TypedDict):
    type: Literal["ping"]


class EditFrame(TypedDict):
    """Extension: send a new version of the user message `message_id`, answered by a new reply."""

    type: Literal["edit"]
    message_id: UuidText
    content: str
    client_id: NotRequired[UuidText | None]


class RegenerateFrame(TypedDict):
    """Extension: answer the user message of the reply `message_id` again, with a new version of the reply."""

    type: Literal["regenerate"]
    message_id: UuidText


class SwitchFrame(TypedDict):
    """Extension: show the version `message_id` (a sibling of a message on the active path)."""

    type: Literal["switch"]
    message_id: UuidText


class ApproveFrame(TypedDict):
    """Extension: approve (or, with `approved` false, deny) the tool call `tool_call_id` of the waiting reply."""

    type: Literal["approve"]
    tool_call_id: str
    approved: bool


ClientFrame = SendFrame | CancelFrame | PingFrame | EditFrame | RegenerateFrame | SwitchFrame | ApproveFrame


# Snapshots (HTTP, DESIGN.md §5): messages as in the `message` event, a reply in progress with its text so far.


class Snapshot(TypedDict):
    id: UuidText
    title: str
    seq: Annotated[Seq, SchemaHint(description="the log position this snapshot reflects (I4)")]
    messages: Annotated[list[MessagePayload], SchemaHint(description="the newest page, oldest first")]
    next: Annotated[
        int | None,
        SchemaHint(
            description="pass as `before` (here or to /messages) for the earlier messages left out by `limit` "
            "or API_MAX_RESPONSE_BYTES; null: none"
        ),
    ]


class MessagePage(TypedDict):
    messages: Annotated[list[MessagePayload], SchemaHint(description="oldest first")]
    seq: Seq
    next: Annotated[
        int | None,
        SchemaHint(
            description="pass as `before` for older ones (left out by `limit` or API_MAX_RESPONSE_BYTES); null: none"
        ),
    ]
