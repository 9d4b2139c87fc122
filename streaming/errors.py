"""Errors a person or client can cause, with the code and HTTP status of the protocol (DESIGN.md §4)."""

from .protocol import ErrorCode


class ChatError(Exception):
    code: ErrorCode = ErrorCode.BAD_REQUEST
    http_status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def http_headers(self) -> dict[str, str]:
        """Return headers an HTTP answer to this error carries."""
        return {}


class BadRequest(ChatError):
    pass


class Busy(ChatError):
    code = ErrorCode.BUSY
    http_status = 409


class TooLong(ChatError):
    code = ErrorCode.TOO_LONG
    http_status = 413


class NotFound(ChatError):
    code = ErrorCode.NOT_FOUND
    http_status = 404


class NotRunning(ChatError):
    code = ErrorCode.NOT_RUNNING
    http_status = 409


class RateLimited(ChatError):
    code = ErrorCode.RATE_LIMITED
    http_status = 429

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class NoApprovalPending(ChatError):
    """An approval or denial of a tool call that no reply is waiting on (decided already, or never asked)."""

    code = ErrorCode.NO_APPROVAL_PENDING
    http_status = 409
