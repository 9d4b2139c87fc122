from django.contrib.auth import views as auth_views
from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.thread_list, name="thread-list"),
    path("threads/<str:thread_id>/", views.thread_detail, name="thread-detail"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/threads", api.threads, name="api-threads"),
    path("api/threads/<str:thread_id>", api.thread_detail, name="api-thread"),
    path("api/threads/<str:thread_id>/messages", api.thread_messages, name="api-thread-messages"),
    path("api/threads/<str:thread_id>/cancel", api.thread_cancel, name="api-thread-cancel"),
]
