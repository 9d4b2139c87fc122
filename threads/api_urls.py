"""Routes beyond threads/urls.py: event streams, the chat APIs, sharing, the OpenAPI document and API tokens."""

from django.urls import path

from . import aisdk, api, sharing_api, sse
from .tokens import views as token_views

urlpatterns = [
    path("api/openapi.json", api.openapi, name="api-openapi"),
    path("api/threads/<str:thread_id>/events", sse.thread_events, name="api-thread-events"),
    path("api/chat", aisdk.chat, name="api-chat"),
    path("api/chat/stream", sse.chat_stream, name="api-chat-stream"),
    path("api/chat/<str:chat_id>/stream", aisdk.chat_resume, name="api-chat-resume"),
    path("api/chat/<str:chat_id>/stop", aisdk.chat_stop, name="api-chat-stop"),
    path("api/threads/<str:thread_id>/members", sharing_api.thread_members, name="api-thread-members"),
    path("api/threads/<str:thread_id>/members/<str:user_id>", sharing_api.thread_member, name="api-thread-member"),
    path("api/threads/<str:thread_id>/links", sharing_api.thread_links, name="api-thread-links"),
    path("api/threads/<str:thread_id>/links/<str:link_id>", sharing_api.thread_link, name="api-thread-link"),
    path("account/tokens/", token_views.token_list, name="api-tokens"),
    path("account/tokens/<int:token_id>/revoke", token_views.token_revoke, name="api-token-revoke"),
]
