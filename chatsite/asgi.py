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
    settings.SECRET_KEY
except ImproperlyConfigured as error:
    raise ImproperlyConfigured("Set the DJANGO_SECRET_KEY environment variable to serve requests.") from error

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from streaming.inline import InlineWorkerMiddleware  # noqa: E402
from threads.routing import websocket_urlpatterns  # noqa: E402
from threads.tokens.middleware import BearerTokenAuthMiddleware  # noqa: E402

websocket_app = URLRouter(websocket_urlpatterns)

application = InlineWorkerMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Browsers: session cookie and an allowed Origin. Other clients: a bearer token.
            "websocket": BearerTokenAuthMiddleware(
                session_app=AllowedHostsOriginValidator(AuthMiddlewareStack(websocket_app)),
                token_app=websocket_app,
            ),
        }
    )
)
