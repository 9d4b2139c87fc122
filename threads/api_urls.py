"""Routes beyond threads/urls.py: event streams, the chat APIs, the OpenAPI document and API tokens."""

from django.urls import path

from . import aisdk, api, sse
from .tokens import views as token_views

urlpatterns = [
    path("api/openapi.json", api.openapi, name="api-openapi"),
    path("api/threads/<str:thread_id>/events", sse.thread_events, name="api-thread-events"),
    path("api/chat", aisdk.chat, name="api-chat"),
    path("api/chat/stream", sse.chat_stream, name="api-chat-stream"),
    path("api/chat/<str:chat_id>/stream", aisdk.chat_resume, name="api-chat-resume"),
    path("api/chat/<str:chat_id>/stop", aisdk.chat_stop, name="api-chat-stop"),
    path("account/tokens/", token_views.token_list, name="api-tokens"),
    path("account/tokens/<int:token_id>/revoke", token_views.token_revoke, name="api-token-revoke"),
]
