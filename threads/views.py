"""Server-rendered pages: the thread list and the thread itself."""
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .errors import NotFound
from .selectors import thread_get_for_user, thread_list_for_user, thread_snapshot
from .services import thread_create

# The thread page renders the newest messages; older ones are paged in on demand.
THREAD_PAGE_MESSAGES = 50


@login_required
@require_http_methods(["GET", "POST"])
def thread_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        thread = thread_create(owner=request.user)
        return redirect("thread-detail", thread_id=thread.id)
    threads = thread_list_for_user(user=request.user)[:100]
    return render(request, "threads/thread_list.html", {"threads": threads})


@login_required
def thread_detail(request: HttpRequest, thread_id: str) -> HttpResponse:
    try:
        thread = thread_get_for_user(user=request.user, thread_id=thread_id)
    except NotFound:
        raise Http404("No such thread.") from None
    snapshot = thread_snapshot(thread=thread, limit=THREAD_PAGE_MESSAGES)
    return render(request, "threads/thread_detail.html", {"thread": thread, "snapshot": snapshot})
