"""Routes beyond threads/urls.py: event streams, the chat APIs, sharing, the OpenAPI document and API tokens."""

from django.urls import path

from . import aisdk, api, seed, sharing_api, sse, versions_api
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
    path("api/threads/<str:thread_id>/members", sharing_api.thread_members, name="api-thread-members"),
    path("api/threads/<str:thread_id>/members/<str:user_id>", sharing_api.thread_member, name="api-thread-member"),
    path("api/threads/<str:thread_id>/links", sharing_api.thread_links, name="api-thread-links"),
    path("api/threads/<str:thread_id>/links/<str:link_id>", sharing_api.thread_link, name="api-thread-link"),
    path("account/tokens/", token_views.token_list, name="api-tokens"),
    path("account/tokens/<int:token_id>/revoke", token_views.token_revoke, name="api-token-revoke"),
]
