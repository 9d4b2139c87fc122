// Generated from streaming/protocol.py by `python manage.py protocoljs`: edit that, then run this.
// The codes of WebSocket protocol v1 (DESIGN.md §4 and the README's extensions).

export const CloseCode = Object.freeze({
  NOT_SIGNED_IN: 4401,
  NOT_ALLOWED: 4403,
  NOT_FOUND: 4404,
  TOO_SLOW: 4008,
  TOO_MANY_STREAMS: 4429,
  SERVER_ERROR: 4500,
});
// Closes that no retry can fix.
export const FINAL_CLOSE_CODES = Object.freeze([CloseCode.NOT_SIGNED_IN, CloseCode.NOT_ALLOWED, CloseCode.NOT_FOUND]);

export const ErrorCode = Object.freeze({
  BAD_REQUEST: "bad_request",
  BUSY: "busy",
  TOO_LONG: "too_long",
  NOT_FOUND: "not_found",
  FORBIDDEN: "forbidden",
  RATE_LIMITED: "rate_limited",
  PROVIDER_ERROR: "provider_error",
  INTERRUPTED: "interrupted",
  NOT_RUNNING: "not_running",
  STREAM_ENDED: "stream_ended",
  TOOL_STEPS_EXCEEDED: "tool_steps_exceeded",
  TOOL_UNCERTAIN: "tool_uncertain",
  NO_APPROVAL_PENDING: "no_approval_pending",
});
