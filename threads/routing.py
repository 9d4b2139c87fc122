from django.urls import path

from .consumers import ThreadConsumer

websocket_urlpatterns = [
    # Any string is routed, so a malformed id is answered with close code 4404, not a refused handshake.
    # Channels' URLRouter routes Django's path() to ASGI apps, which the stubs' path() does not take.
    path("ws/threads/<str:thread_id>/", ThreadConsumer.as_asgi()),  # type: ignore[arg-type]
]
