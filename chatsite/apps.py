from django.apps import AppConfig


class ChatsiteConfig(AppConfig):
    """The project itself: its operations commands (`release`) and process-wide set-up."""

    name = "chatsite"

    def ready(self) -> None:
        # Before the first request: Django's instrumentation adds a middleware, read when the handler loads.
        from .tracing import configure_tracing

        configure_tracing()
