"""Routes beyond threads/urls.py: event streams, the chat APIs, the OpenAPI document and API tokens."""

from django.urls import path

from . import aisdk, api, seed, sse, versions_api
from .tokens import views as token_views

urlpatterns = [
    path("api/openapi.json", api.openapi, name="api-openapi"),
    path("api/threads/<str:thread_id>/events", sse.thread_events, name="api-thread-events"),
    path(
        "api/threads/<str:thread_id>/messages/<str:message_id>/edit",
        versions_api.message_edit_view,
        name="api-message-edit",
    ),
    path(
        "api/threads/<str:thread_id>/replies/<str:message_id>/regenerate",
        versions_api.reply_regenerate_view,
        name="api-reply-regenerate",
    ),
    path(
        "api/threads/<str:thread_id>/messages/<str:message_id>/switch",
        versions_api.version_switch_view,
        name="api-version-switch",
    ),
    path("api/chat", aisdk.chat, name="api-chat"),
    path("api/chat/stream", seed.chat_stream, name="api-chat-stream"),
    path("api/chat/resume/<str:stream_id>", seed.chat_stream_resume, name="api-chat-stream-resume"),
    path("api/chat/<str:chat_id>/stream", aisdk.chat_resume, name="api-chat-resume"),
    path("api/chat/<str:chat_id>/stop", aisdk.chat_stop, name="api-chat-stop"),
    path("account/tokens/", token_views.token_list, name="api-tokens"),
    path("account/tokens/<int:token_id>/revoke", token_views.token_revoke, name="api-token-revoke"),
]
