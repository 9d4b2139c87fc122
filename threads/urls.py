from django.urls import path

from . import api, sessions, views

urlpatterns = [
    path("", views.thread_list, name="thread-list"),
    path("threads/activity", views.thread_activity, name="thread-activity"),
    path("threads/<str:thread_id>/", views.thread_detail, name="thread-detail"),
    path("threads/<str:thread_id>/earlier", views.thread_earlier, name="thread-earlier"),
    path("threads/<str:thread_id>/title", views.thread_rename_view, name="thread-rename"),
    path(
        "threads/<str:thread_id>/replies/<str:message_id>/retry", views.reply_retry_view, name="reply-retry"
    ),
    path("accounts/login/", views.SignInView.as_view(), name="login"),
    path("accounts/logout/", sessions.SignOutView.as_view(), name="logout"),
    path("accounts/signup/", views.sign_up, name="signup"),
    path("api/threads", api.threads, name="api-threads"),
    path("api/threads/<str:thread_id>", api.thread_detail, name="api-thread"),
    path("api/threads/<str:thread_id>/messages", api.thread_messages, name="api-thread-messages"),
    path("api/threads/<str:thread_id>/cancel", api.thread_cancel, name="api-thread-cancel"),
]
