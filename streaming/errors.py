"""Errors a person or client can cause, with the code and HTTP status of the protocol (DESIGN.md §4)."""


class ChatError(Exception):
    code = "bad_request"
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
    code = "busy"
    http_status = 409


class TooLong(ChatError):
    code = "too_long"
    http_status = 413


class NotFound(ChatError):
    code = "not_found"
    http_status = 404


class NotRunning(ChatError):
    code = "not_running"
    http_status = 409


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
