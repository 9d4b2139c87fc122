"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before anything imports models (consumers, routing).
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

# A web process signs sessions and CSRF tokens: without a key it refuses to start, not at its first request.
try:
    settings.SECRET_KEY  # noqa: B018 (reading it is the check)
except ImproperlyConfigured as error:
    raise ImproperlyConfigured("Set the DJANGO_SECRET_KEY environment variable to serve requests.") from error

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chatsite.forwarded import ForwardedClientMiddleware  # noqa: E402
from chatsite.websocket_origin import SameOriginValidator  # noqa: E402
from streaming.inline import InlineWorkerMiddleware  # noqa: E402
from threads.routing import websocket_urlpatterns  # noqa: E402
from threads.tokens.middleware import BearerTokenAuthMiddleware  # noqa: E402

# Channels' stubs type the routes as patterns of ASGI apps, which Django's path() makes but is not typed to.
websocket_app = URLRouter(websocket_urlpatterns)  # type: ignore[arg-type]

application = ForwardedClientMiddleware(
    InlineWorkerMiddleware(
        ProtocolTypeRouter(
            {
                "http": django_asgi_app,
                # Browsers: session cookie and the site's own Origin (scheme, host and port).
                # Other clients: a bearer token.
                "websocket": BearerTokenAuthMiddleware(
                    session_app=SameOriginValidator(AuthMiddlewareStack(websocket_app)),
                    token_app=websocket_app,
                ),
            }
        )
    )
)
