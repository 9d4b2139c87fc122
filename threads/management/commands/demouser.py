from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from threads.demo import DEMO_PASSWORD, DEMO_USERNAME


class Command(BaseCommand):
    help = "Create the demo user for a local debug run and print how to sign in."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("The demo user is for local debug runs only (DJANGO_DEBUG=on).")
        user, created = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        self.stdout.write(f"Sign in as {DEMO_USERNAME} / {DEMO_PASSWORD}")
