from django.urls import path

from . import api, sessions, views

urlpatterns = [
    path("", views.thread_list, name="thread-list"),
    path("archived/", views.thread_archived, name="thread-archived"),
    path("new/", views.thread_new, name="thread-new"),
    path("threads/activity", views.thread_activity, name="thread-activity"),
    path("threads/sidebar", views.thread_sidebar, name="thread-sidebar"),
    path("threads/<str:thread_id>/", views.thread_detail, name="thread-detail"),
    path("threads/<str:thread_id>/earlier", views.thread_earlier, name="thread-earlier"),
    path("threads/<str:thread_id>/title", views.thread_rename_view, name="thread-rename"),
    path("threads/<str:thread_id>/start", views.thread_start_view, name="thread-start"),
    path("threads/<str:thread_id>/archive", views.thread_archive_view, name="thread-archive"),
    path("threads/<str:thread_id>/delete", views.thread_delete_view, name="thread-delete"),
    path("threads/<str:thread_id>/replies/<str:message_id>/retry", views.reply_retry_view, name="reply-retry"),
    path("s/<str:token>", views.share_link_open, name="share-link"),
    path("accounts/login/", views.SignInView.as_view(), name="login"),
    path("accounts/logout/", sessions.SignOutView.as_view(), name="logout"),
    path("accounts/signup/", views.sign_up, name="signup"),
    path("api/threads", api.threads, name="api-threads"),
    path("api/threads/<str:thread_id>", api.thread_detail, name="api-thread"),
    path("api/threads/<str:thread_id>/messages", api.thread_messages, name="api-thread-messages"),
    path("api/threads/<str:thread_id>/cancel", api.thread_cancel, name="api-thread-cancel"),
    path("api/threads/<str:thread_id>/approvals", api.thread_approve, name="api-thread-approve"),
]
