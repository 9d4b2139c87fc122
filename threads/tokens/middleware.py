"""Bearer authentication: HTTP requests (Django middleware) and WebSocket handshakes (ASGI middleware).

A request signed with a token is the token's user and skips the CSRF check; see the
package docstring for why that is safe.
"""
from asgiref.sync import iscoroutinefunction, sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

from ..errors import Unauthenticated, error_response
from ..models import ApiToken
from .selectors import api_token_authenticate


def bearer_secret(authorization: str | None) -> str | None:
    """Return the secret of a `Bearer` Authorization header ("" when empty), None for no or another scheme."""
    scheme, _, secret = (authorization or "").strip().partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


def _unauthorized() -> HttpResponse:
    return error_response(
        Unauthenticated("The API token is unknown or revoked.", challenge='Bearer error="invalid_token"')
    )


def _sign_in(request: HttpRequest, token: ApiToken) -> None:
    user = token.user
    request.user = user
    request.api_token_id = token.id  # streams opened by this request end when the token is revoked

    async def auser() -> AbstractBaseUser:
        return user

    request.auser = auser
    request._dont_enforce_csrf_checks = True  # see the package docstring


@sync_and_async_middleware
def bearer_token_middleware(get_response):
    """Authenticate requests that carry a bearer token; refuse a bad token with 401 (after AuthenticationMiddleware)."""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            secret = bearer_secret(request.headers.get("Authorization"))
            if secret is not None:
                token = await sync_to_async(api_token_authenticate)(secret=secret) if secret else None
                if token is None:
                    return _unauthorized()
                _sign_in(request, token)
            return await get_response(request)

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            secret = bearer_secret(request.headers.get("Authorization"))
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
