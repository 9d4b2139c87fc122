"""Bearer authentication: HTTP requests (Django middleware) and WebSocket handshakes (ASGI middleware).

A request signed with a token is the token's user and skips the CSRF check; see the
package docstring for why that is safe.
"""

from asgiref.sync import iscoroutinefunction, sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

from ..errors import Unauthenticated, error_response
from ..models import ApiToken
from .selectors import api_token_authenticate

# Tokens are for the chat API only: anywhere else (the admin, pages, the tokens page) a bearer
# header signs nobody in, so a leaked token cannot act as its person's session, staff rights
# included; such a request is answered as its cookies (and CSRF token) allow, or as anonymous.
API_PATH_PREFIX = "/api/"


def bearer_secret(authorization: str | None) -> str | None:
    """Return the secret of a `Bearer` Authorization header ("" when empty), None for no or another scheme."""
    scheme, _, secret = (authorization or "").strip().partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


def _unauthorized() -> HttpResponse:
    return error_response(
        Unauthenticated("The API token is unknown or revoked.", challenge='Bearer error="invalid_token"')
    )


def api_bearer_secret(request: HttpRequest) -> str | None:
    """Return the bearer secret of a request to the JSON API; None elsewhere, where a token is no credential."""
    if not request.path.startswith(API_PATH_PREFIX):
        return None
    return bearer_secret(request.headers.get("Authorization"))


def _sign_in(request: HttpRequest, token: ApiToken) -> None:
    user = token.user
    request.user = user
    # Streams opened by this request end when the token is revoked (read by request_api_token_id).
    request.api_token_id = token.id  # type: ignore[attr-defined]

    async def auser() -> User:
        return user

    request.auser = auser
    # CsrfViewMiddleware's own opt-out flag, which HttpRequest does not declare; see the package docstring.
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]


@sync_and_async_middleware
def bearer_token_middleware(get_response):
    """Authenticate API requests that carry a bearer token, refusing a bad one with 401; elsewhere ignore tokens.

    Runs after AuthenticationMiddleware.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            secret = api_bearer_secret(request)
            if secret is not None:
                token = await sync_to_async(api_token_authenticate)(secret=secret) if secret else None
                if token is None:
                    return _unauthorized()
                _sign_in(request, token)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        secret = api_bearer_secret(request)
        if secret is not None:
            token = api_token_authenticate(secret=secret) if secret else None
            if token is None:
                return _unauthorized()
            _sign_in(request, token)
        return get_response(request)

    return middleware


class BearerTokenAuthMiddleware:
    """Send WebSocket handshakes that carry a bearer token to `token_app`, the others to `session_app`.

    The token path needs no Origin check: a browser cannot set headers on a WebSocket
    handshake, so such a handshake is not a page hijacking someone's session. An
    unknown or revoked token connects as anonymous, which the consumer closes with 4401;
    a valid one puts its id in the scope as `api_token_id`, so the socket closes when
    the token is revoked.
    """

    def __init__(self, session_app, token_app) -> None:
        self.session_app = session_app
        self.token_app = token_app

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        secret = bearer_secret(headers.get(b"authorization", b"").decode("latin-1"))
        if secret is None:
            return await self.session_app(scope, receive, send)
        token = await database_sync_to_async(api_token_authenticate)(secret=secret) if secret else None
        authenticated = {"user": token.user, "api_token_id": token.id} if token else {"user": AnonymousUser()}
        return await self.token_app({**scope, **authenticated}, receive, send)
