from django.apps import AppConfig
from django.core import checks
from django.db.backends.signals import connection_created


class ChatsiteConfig(AppConfig):
    """The project itself: its operations commands (`release`) and process-wide set-up."""

    name = "chatsite"

    def ready(self) -> None:
        # Before the first request: Django's instrumentation adds a middleware, read when the handler loads.
        from .tracing import configure_tracing

        configure_tracing()

        from .timestamps import install_timestamp_loader

        connection_created.connect(install_timestamp_loader, dispatch_uid="chatsite.timestamps")

        from .metrics import allowed_networks_check

        checks.register(allowed_networks_check)
