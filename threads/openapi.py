"""The OpenAPI 3.1 description of the HTTP API, served at /api/openapi.json.

tests/test_openapi.py runs schemathesis against the app with this document: an answer
the document does not describe (a status, a header, a field) fails the suite. Answers
list their fields exactly (`additionalProperties: false`); the shapes the protocol
defines (messages, snapshots, errors) are derived from streaming/protocol.py, so a new
field there is one here too. Request bodies may carry more than they describe, which is
ignored.
"""

from typing import Any

from django.conf import settings

from streaming import protocol

from .typeschema import json_schema

ERROR_MEANINGS = {
    400: "bad_request: the input is malformed",
    401: "not signed in, or the bearer token is unknown or revoked",
    403: "forbidden: a cookie request without the CSRF token, or a thread shared with you without the right to "
    "do this (a viewer writing; anyone but the owner renaming, deleting or sharing)",
    404: "not_found: unknown, foreign and malformed ids alike",
    405: "the method is not allowed here",
    409: "busy (a reply is being written), not_running (nothing to stop) or no_approval_pending "
    "(no reply waits for a decision on that tool call)",
    413: "too_long: the body is over DATA_UPLOAD_MAX_MEMORY_SIZE bytes, or a message over CHAT_MAX_MESSAGE_CHARS",
    429: "rate_limited: more than CHAT_SENDS_PER_MINUTE sends (retries and regenerates included), "
    "CHAT_THREADS_PER_HOUR new threads, or CHAT_MAX_STREAMS_PER_USER open streams; deleting threads gives none back; "
    "try again after Retry-After seconds",
}
# Refusals particular to the operations that open a stream (an event stream or a UI message stream).
STREAM_LIMITED = {
    429: "rate_limited: CHAT_MAX_STREAMS_PER_USER streams (WebSockets and event streams) are open already; "
    "close one, or try again after Retry-After seconds",
}
STREAM_ENDED = {
    404: "not_found: no such stream (an unknown id, or another person's)",
    410: "stream_ended: the reply has ended; read it from the thread",
}
STRING = {"type": "string"}
UUID = json_schema(protocol.UuidText)
DATE_TIME = json_schema(protocol.Timestamp)
SEQ = json_schema(protocol.Seq)
# Protocol types with a schema of their own in the document, referred to by name elsewhere.
NAMED_SCHEMAS = {
    protocol.UserMessage: "UserMessage",
    protocol.AssistantMessage: "AssistantMessage",
    protocol.MessagePayload: "Message",
}
SEQ_CURSOR = {"type": "integer", "minimum": 1}
PAGE_LIMIT = {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
# PostgreSQL text cannot hold NUL, so no body string may contain one.
NO_NUL = r"^[^\u0000]*$"
NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
THREAD_ID = {"name": "thread_id", "in": "path", "required": True, "schema": STRING}
MESSAGE_ID = {"name": "message_id", "in": "path", "required": True, "schema": STRING}
STREAM_ID_HEADER = {
    "X-Stream-Id": {"schema": UUID, "description": "the reply's id: resume with GET /api/chat/resume/{stream_id}"}
}
CHAT_ID = {"name": "chat_id", "in": "path", "required": True, "schema": STRING, "description": "the thread id"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def answer_object(properties: dict[str, Any], *, optional: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """Return the schema of an answer with exactly these fields, all present but the `optional` ones."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties, **extra}


def body_object(properties: dict[str, Any], *, required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties, **extra}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def answer(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, **json_content(schema), **extra}


def errors(*statuses: int, meanings: dict[int, str] | None = None) -> dict[str, Any]:
    """Return the error answers of an operation: those of every operation and `statuses`, described by `meanings`."""
    described = ERROR_MEANINGS | (meanings or {})
    answers = {str(status): answer(described[status], ref("Error")) for status in (401, 403, 405, *statuses)}
    if 429 in statuses:
        answers["429"]["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0}}}
    return answers


def event_stream(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "Cache-Control": {"schema": {"const": "no-cache"}},
            "X-Accel-Buffering": {"schema": {"const": "no"}},
        },
        "content": {"text/event-stream": {"schema": STRING}},
    }


def ui_message_stream(description: str) -> dict[str, Any]:
    """Return an answer that is a UI message stream (the AI SDK's), naming its stream id."""
    stream = event_stream(description)
    stream["headers"] |= {"x-vercel-ai-ui-message-stream": {"schema": {"const": "v1"}}, **STREAM_ID_HEADER}
    return stream


def links(expression: str, operations: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
    """Return OpenAPI links passing `expression` as each operation's path parameter (stateful tests follow them)."""
    return {
        name: {"operationRef": f"#/paths/{path.replace('/', '~1')}/{method}", "parameters": {parameter: expression}}
        for name, (method, path, parameter) in operations.items()
    }


THREAD_OPERATIONS = {
    "GetThread": ("get", "/api/threads/{thread_id}", "thread_id"),
    "RenameThread": ("patch", "/api/threads/{thread_id}", "thread_id"),
    "DeleteThread": ("delete", "/api/threads/{thread_id}", "thread_id"),
    "ListMessages": ("get", "/api/threads/{thread_id}/messages", "thread_id"),
    "SendMessage": ("post", "/api/threads/{thread_id}/messages", "thread_id"),
    "CancelReply": ("post", "/api/threads/{thread_id}/cancel", "thread_id"),
    "DecideToolCall": ("post", "/api/threads/{thread_id}/approvals", "thread_id"),
}
CHAT_OPERATIONS = {
    "GetChatThread": ("get", "/api/threads/{thread_id}", "thread_id"),
    "StopChat": ("post", "/api/chat/{chat_id}/stop", "chat_id"),
}


def protocol_schema(annotation: Any, **extra: Any) -> dict[str, Any]:
    """Return the schema of a protocol type, naming the types of NAMED_SCHEMAS by reference."""
    refs: dict[Any, str] = {named: name for named, name in NAMED_SCHEMAS.items() if named != annotation}
    return json_schema(annotation, refs=refs) | extra


def schemas() -> dict[str, Any]:
    content = {"type": "string", "minLength": 1, "maxLength": settings.CHAT_MAX_MESSAGE_CHARS, "pattern": NOT_BLANK}
    ui_message = body_object(
        {
            "id": STRING,
            "role": {"enum": ["system", "user", "assistant"]},
            "parts": {"type": "array", "items": {"type": "object"}},
        },
        required=("id", "role", "parts"),
    )
    return {
        "Error": answer_object({"error": protocol_schema(protocol.ErrorObject)}),
        "UserMessage": protocol_schema(protocol.UserMessage),
        "AssistantMessage": protocol_schema(protocol.AssistantMessage),
        "Message": protocol_schema(
            protocol.MessagePayload,
            description="As in the `message` event of WebSocket protocol v1; a reply in progress has its text so far.",
        ),
        "ThreadSummary": answer_object(
            {
                "id": UUID,
                "title": STRING,
                "created_at": DATE_TIME,
                "updated_at": DATE_TIME,
                "shared": {"type": "boolean", "description": "shared with you by its owner (not yours)"},
            }
        ),
        "ThreadList": answer_object(
            {
                "threads": {"type": "array", "items": ref("ThreadSummary")},
                "next": {"type": ["string", "null"], "description": "pass as `cursor` for the next page; null: last"},
            }
        ),
        "Snapshot": protocol_schema(protocol.Snapshot),
        "MessagePage": protocol_schema(protocol.MessagePage),
        "CreateThread": body_object({"title": {**STRING, "pattern": NO_NUL}}),
        "RenameThread": body_object(
            {"title": {**STRING, "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK}}, required=("title",)
        ),
        "Send": body_object(
            {
                "content": content,
                "client_id": {"type": ["string", "null"], "format": "uuid", "description": "idempotency key (I7)"},
            },
            required=("content",),
        ),
        "Sent": answer_object({"message": ref("UserMessage"), "reply": ref("AssistantMessage"), "seq": SEQ}),
        "Reply": answer_object({"reply": ref("AssistantMessage")}),
        "Regenerated": answer_object({"reply": ref("AssistantMessage"), "seq": SEQ}),
        "Switched": answer_object(
            {"seq": {**SEQ, "description": "the `switch` event's (the thread's last seq when nothing changed)"}}
        ),
        "Approval": body_object(
            {
                "tool_call_id": {**STRING, "minLength": 1, "maxLength": 200, "pattern": NO_NUL},
                "approved": {"type": "boolean", "description": "true runs the call; false denies it"},
            },
            required=("tool_call_id", "approved"),
        ),
        "Decided": answer_object({"tool_call_id": STRING, "approved": {"type": "boolean"}}),
        "SeedChat": body_object(
            {
                "id": {**UUID, "description": "the thread; a new id starts a thread"},
                "message": body_object({"role": {"const": "user"}, "content": content}, required=("role", "content")),
            },
            required=("id", "message"),
            **{"not": {"required": ["messages"]}},
        ),
        "SeedChatStarted": answer_object(
            {"success": {"const": True}, "threadId": UUID, "streamId": {**UUID, "description": "the reply's id"}}
        ),
        "AiSdkChat": body_object(
            {
                "id": UUID,
                "messages": {"type": "array", "minItems": 1, "items": ui_message},
                "trigger": {"enum": ["submit-message", "regenerate-message"]},
            },
            required=("id", "messages"),
            description="The body of the AI SDK's DefaultChatTransport; the last message is the user's new one.",
        ),
    } | sharing_schemas()


MEMBER_ROLE = {"enum": ["viewer", "participant"], "description": "viewer reads; participant also writes"}
USER_ID = {"name": "user_id", "in": "path", "required": True, "schema": STRING, "description": "the member's user id"}
LINK_ID = {"name": "link_id", "in": "path", "required": True, "schema": STRING}


def sharing_schemas() -> dict[str, Any]:
    person = protocol_schema(protocol.Person)
    link_fields = {
        "id": {"type": "integer"},
        "prefix": {**STRING, "description": "the token's first characters, to tell links apart"},
        "created_at": DATE_TIME,
        "expires_at": {**DATE_TIME, "type": ["string", "null"]},
        "revoked_at": {**DATE_TIME, "type": ["string", "null"]},
    }
    return {
        "Member": answer_object({"user": person, "role": MEMBER_ROLE, "created_at": DATE_TIME}),
        "MemberList": answer_object({"owner": person, "members": {"type": "array", "items": ref("Member")}}),
        "AddMember": body_object(
            {"username": {**STRING, "pattern": NOT_BLANK}, "role": MEMBER_ROLE}, required=("username", "role")
        ),
        "ChangeRole": body_object({"role": MEMBER_ROLE}, required=("role",)),
        "ShareLink": answer_object(link_fields),
        "ShareLinkList": answer_object({"links": {"type": "array", "items": ref("ShareLink")}}),
        "NewShareLink": answer_object(
            link_fields
            | {
                "token": {**STRING, "description": "the secret, shown this once; only its hash is stored"},
                "url": {**STRING, "description": "the page that opens the thread read-only: /s/<token>"},
            }
        ),
        "CreateShareLink": body_object(
            {
                "expires_in_seconds": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": 366 * 24 * 3600,
                    "description": "null or absent: the link lasts until revoked",
                }
            }
        ),
    }


def paths() -> dict[str, Any]:
    thread_path = {"parameters": [THREAD_ID]}
    chat_path = {"parameters": [CHAT_ID]}
    version_path = {"parameters": [THREAD_ID, MESSAGE_ID]}
    streams = {"tags": ["streams"]}  # answers that stay open: the generated test runs leave them out
    return {
        "/api/threads": {
            "get": {
                "summary": "List your threads, newest activity first",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": PAGE_LIMIT},
                    {"name": "cursor", "in": "query", "schema": STRING, "description": "`next` of the previous page"},
                ],
                "responses": {"200": answer("a page of threads", ref("ThreadList")), **errors(400)},
            },
            "post": {
                "summary": "Start a thread",
                "requestBody": {"required": False, **json_content(ref("CreateThread"))},
                "responses": {
                    "201": answer(
                        "the new thread's snapshot",
                        ref("Snapshot"),
                        links=links("$response.body#/id", THREAD_OPERATIONS),
                    ),
                    **errors(400, 413, 429),
                },
            },
        },
        "/api/threads/{thread_id}": thread_path
        | {
            "get": {
                "summary": "Snapshot of a thread: its newest messages, paged like /messages",
                "parameters": [
                    {"name": "before", "in": "query", "schema": SEQ_CURSOR, "description": "seq"},
                    {"name": "limit", "in": "query", "schema": PAGE_LIMIT},
                ],
                "responses": {"200": answer("the snapshot", ref("Snapshot")), **errors(400, 404)},
            },
            "patch": {
                "summary": "Rename a thread (not activity: it keeps its place in the list)",
                "requestBody": {"required": True, **json_content(ref("RenameThread"))},
                "responses": {"200": answer("the renamed thread", ref("ThreadSummary")), **errors(400, 404, 413)},
            },
            "delete": {
                "summary": "Delete a thread with its messages; a reply being written stops",
                "responses": {"204": {"description": "deleted"}, **errors(404)},
            },
        },
        "/api/threads/{thread_id}/messages": thread_path
        | {
            "get": {
                "summary": "Page through a thread's messages, newest page first",
                "parameters": [
                    {
                        "name": "before",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1},
                        "description": "seq",
                    },
                    {"name": "limit", "in": "query", "schema": PAGE_LIMIT},
                ],
                "responses": {"200": answer("the messages before `before`", ref("MessagePage")), **errors(400, 404)},
            },
            "post": {
                "summary": "Send a message; the reply is queued and streams on the thread's events",
                "requestBody": {"required": True, **json_content(ref("Send"))},
                "responses": {
                    "202": answer("the message and its queued reply", ref("Sent")),
                    **errors(400, 404, 409, 413, 429),
                },
            },
        },
        "/api/threads/{thread_id}/messages/{message_id}/edit": version_path
        | {
            "post": {
                "summary": "Send a new version of a user message on the active path; answered by a new reply",
                "description": "The new message follows the edited one's parent; what followed the edited "
                "message leaves the active path and stays, as the earlier version. Idempotent by `client_id`.",
                "requestBody": {"required": True, **json_content(ref("Send"))},
                "responses": {
                    "202": answer("the new version and its queued reply", ref("Sent")),
                    **errors(400, 404, 409, 413, 429),
                },
            },
        },
        "/api/threads/{thread_id}/replies/{message_id}/regenerate": version_path
        | {
            "post": {
                "summary": "Write a new version of a reply (any status), answering its user message again",
                "responses": {
                    "202": answer("the new version, queued", ref("Regenerated")),
                    **errors(400, 404, 409, 429),
                },
            },
        },
        "/api/threads/{thread_id}/messages/{message_id}/switch": version_path
        | {
            "post": {
                "summary": "Show another version of a message: a `switch` event gives every client the new path",
                "description": "The message must be a version of one on the active path; below it, the path "
                "follows the newest version of each message.",
                "responses": {"200": answer("the seq of the switch", ref("Switched")), **errors(400, 404, 409)},
            },
        },
        "/api/threads/{thread_id}/cancel": thread_path
        | {
            "post": {
                "summary": "Stop the reply being written",
                "responses": {"202": answer("the reply, to end `cancelled`", ref("Reply")), **errors(404, 409)},
            },
        },
        "/api/threads/{thread_id}/approvals": thread_path
        | {
            "post": {
                "summary": "Approve or deny a tool call the reply waits on (status awaiting_approval)",
                "description": "Only a writer of the thread decides. The decision is logged as the approval part's "
                "`part_end` event; once no call of the reply waits, any worker resumes it.",
                "requestBody": {"required": True, **json_content(ref("Approval"))},
                "responses": {"202": answer("the decision, logged", ref("Decided")), **errors(400, 404, 409, 413)},
            },
        },
        "/api/threads/{thread_id}/events": thread_path
        | {
            "get": streams
            | {
                "summary": "The thread's log as server-sent events, then live",
                "description": "Records `id: <seq>`, `event: <type>`, `data: <frame>` carry the frames of WebSocket "
                "protocol v1, exactly once and in order (with the extension `switch`: another version of a message "
                "was chosen); a `: keep-alive` comment every 15 s of quiet. Control "
                "frames come without `id`: `thread` when the thread is renamed, `presence` (with `presence=1`: "
                '`{"type": "presence", "people": [{"id", "name"}]}`, who watches the thread now) '
                "after `ready` and whenever the people change, and `error` (code `forbidden`, or `not_found` for a "
                "deleted thread) just before the stream ends when the API token or session it was opened with is "
                "revoked, or its reader may no longer read the thread (removed, share link revoked).",
                "parameters": [
                    {"name": "after", "in": "query", "schema": SEQ, "description": "resume after this seq (default 0)"},
                    {
                        "name": "presence",
                        "in": "query",
                        "schema": {"enum": ["1"]},
                        "description": "1: also send `presence` records",
                    },
                    {"name": "Last-Event-ID", "in": "header", "schema": STRING, "description": "wins over `after`"},
                ],
                "responses": {"200": event_stream("the event stream"), **errors(404, 429, meanings=STREAM_LIMITED)},
            },
        },
        **sharing_paths(),
        "/api/chat": {
            "post": {
                "summary": "Send a message: a seed API body answers JSON, an AI SDK body the reply's UI message stream",
                "requestBody": {"required": True, **json_content({"oneOf": [ref("SeedChat"), ref("AiSdkChat")]})},
                "responses": {
                    "200": {
                        "description": "where to stream the reply, or the reply itself "
                        "(`x-vercel-ai-ui-message-stream`)",
                        "headers": STREAM_ID_HEADER,
                        "links": links("$response.body#/threadId", CHAT_OPERATIONS),
                        "content": {
                            "application/json": {"schema": ref("SeedChatStarted")},
                            "text/event-stream": {"schema": STRING},
                        },
                    },
                    **errors(400, 404, 409, 413, 429),
                },
            },
        },
        "/api/chat/stream": {
            "get": streams
            | {
                "summary": "The seed API's stream: the thread's latest reply as a UI message stream, from its start",
                "description": "`data: {json}` records of the AI SDK's UI message stream (`start`, `text-start`, "
                "`text-delta` {id, delta}, `text-end`, then `finish`, `abort` or `error`) and `data: [DONE]` once "
                "the reply has ended, which it may have already. Each record carries its log seq as `id:`: a "
                "request with Last-Event-ID goes on after it, and gets 204 when the reply ended there.",
                "parameters": [
                    {"name": "id", "in": "query", "required": True, "schema": STRING, "description": "the thread"},
                    {"name": "Last-Event-ID", "in": "header", "schema": STRING, "description": "resume after"},
                ],
                "responses": {
                    "200": ui_message_stream("the reply as a UI message stream"),
                    "204": {"description": "the thread has no reply, or it ended at Last-Event-ID"},
                    **errors(400, 404, 429, meanings=STREAM_LIMITED),
                },
            },
        },
        "/api/chat/resume/{stream_id}": {
            "parameters": [{"name": "stream_id", "in": "path", "required": True, "schema": STRING}],
            "get": streams
            | {
                "summary": "Resume the stream a POST /api/chat started (its X-Stream-Id), replayed from its start",
                "parameters": [
                    {"name": "Last-Event-ID", "in": "header", "schema": STRING, "description": "resume after"}
                ],
                "responses": {
                    "200": ui_message_stream("the reply as a UI message stream, as /api/chat/stream"),
                    **errors(404, 410, 429, meanings=STREAM_LIMITED | STREAM_ENDED),
                },
            },
        },
        "/api/chat/{chat_id}/stream": chat_path
        | {
            "get": streams
            | {
                "summary": "Resume the reply being written (AI SDK), replayed from its start",
                "responses": {
                    "200": ui_message_stream("the reply as a UI message stream"),
                    "204": {"description": "no reply is being written"},
                    **errors(404, 429, meanings=STREAM_LIMITED),
                },
            },
        },
        "/api/chat/{chat_id}/stop": chat_path
        | {
            "post": {
                "summary": "Stop the reply being written (AI SDK)",
                "responses": {"202": answer("the reply, to end `cancelled`", ref("Reply")), **errors(404, 409)},
            },
        },
    }


def sharing_paths() -> dict[str, Any]:
    thread_path = {"parameters": [THREAD_ID]}
    return {
        "/api/threads/{thread_id}/members": thread_path
        | {
            "get": {
                "summary": "The thread's owner and members (anyone who reads the thread)",
                "responses": {"200": answer("the owner and members", ref("MemberList")), **errors(404)},
            },
            "post": {
                "summary": "Share the thread with a person, as viewer or participant (the owner); "
                "a member already there takes the new role",
                "requestBody": {"required": True, **json_content(ref("AddMember"))},
                "responses": {"201": answer("the membership", ref("Member")), **errors(400, 404, 413)},
            },
        },
        "/api/threads/{thread_id}/members/{user_id}": {"parameters": [THREAD_ID, USER_ID]}
        | {
            "patch": {
                "summary": "Change a member's role (the owner); a lowered role writes nothing more at once",
                "requestBody": {"required": True, **json_content(ref("ChangeRole"))},
                "responses": {"200": answer("the membership", ref("Member")), **errors(400, 404, 413)},
            },
            "delete": {
                "summary": "Remove a member (the owner), or leave (your own user id); their open streams end at once",
                "responses": {"204": {"description": "removed"}, **errors(400, 404)},
            },
        },
        "/api/threads/{thread_id}/links": thread_path
        | {
            "get": {
                "summary": "The thread's share links, revoked and expired ones too (the owner)",
                "responses": {"200": answer("the links", ref("ShareLinkList")), **errors(404)},
            },
            "post": {
                "summary": "Make a read-only share link (the owner); its token is in this answer only",
                "requestBody": {"required": False, **json_content(ref("CreateShareLink"))},
                "responses": {"201": answer("the link with its token", ref("NewShareLink")), **errors(400, 404, 413)},
            },
        },
        "/api/threads/{thread_id}/links/{link_id}": {"parameters": [THREAD_ID, LINK_ID]}
        | {
            "delete": {
                "summary": "Revoke a share link (the owner): whoever watches through it is cut off at once",
                "responses": {"200": answer("the revoked link", ref("ShareLink")), **errors(404)},
            },
        },
    }


def openapi_document(*, server_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatsite",
            "version": "1",
            "description": "Resumable AI chat. Authenticate with `Authorization: Bearer <token>` (make one at "
            "/account/tokens/) or with the session cookie plus the `X-CSRFToken` header on writes.",
        },
        "servers": [{"url": server_url.rstrip("/")}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME},
            },
            "schemas": schemas(),
        },
        "paths": paths(),
    }
