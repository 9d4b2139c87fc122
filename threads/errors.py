"""How an error answers over HTTP: the refusals only HTTP has, and the one function that answers any ChatError.

Every error answer the site gives (the JSON API, the API tokens, the pages' script and
forms) goes through `error_response`, so the status and headers of an error are picked
in one place: the error's own `http_status` and `http_headers()`.
"""

from collections.abc import Sequence

from django.http import HttpResponse, JsonResponse

from streaming.errors import ChatError
from streaming.protocol import ErrorCode


class MethodNotAllowed(ChatError):
    """Refuse a method the endpoint does not answer, naming those it does in Allow."""

    http_status = 405

    def __init__(self, methods: Sequence[str]) -> None:
        super().__init__(f"Use {' or '.join(methods)}.")
        self.methods = methods

    def http_headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.methods)}


class Unauthenticated(ChatError):
    """Refuse a request that nobody, or no valid credential, signed; `challenge` becomes WWW-Authenticate."""

    code = ErrorCode.FORBIDDEN
    http_status = 401

    def __init__(self, detail: str, *, challenge: str | None = None) -> None:
        super().__init__(detail)
        self.challenge = challenge

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge} if self.challenge else {}


class Forbidden(ChatError):
    """Refuse a request whose sender is known but not allowed to make it."""

    code = ErrorCode.FORBIDDEN
    http_status = 403


class StreamEnded(ChatError):
    """Refuse to resume a stream whose reply has ended: HTTP's 410 Gone, as resumable-stream clients expect."""

    code = ErrorCode.STREAM_ENDED
    http_status = 410


def error_response(error: ChatError, *, page: HttpResponse | None = None) -> HttpResponse:
    """Answer `error` with its status and headers: as the API's JSON error, or as `page`, a page that shows it."""
    response = page if page is not None else JsonResponse({"error": {"code": error.code, "detail": error.detail}})
    response.status_code = error.http_status
    for header, value in error.http_headers().items():
        response[header] = value
    return response
