"""`python manage.py release`: the Procfile's release step, run once per deploy before the new processes start."""

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Collect the static files under hashed, compressed names into STATIC_ROOT, then apply the database migrations."
    )

    def handle(self, *args, verbosity: int, **options) -> None:
        call_command("collectstatic", interactive=False, verbosity=verbosity)
        call_command("migrate", interactive=False, verbosity=verbosity)
