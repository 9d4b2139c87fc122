"""Environment for the test run, loaded as a plugin (`-p tests.testenv`) before Django is set up."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
# Tests speak plain HTTP to servers without a TLS proxy in front.
os.environ.setdefault("DJANGO_SSL_REDIRECT", "off")
# Tests run worker loops explicitly (the `worker` fixture), one per test's event loop.
os.environ.setdefault("STREAM_INLINE_WORKER", "off")
# Fast, short scripted replies keep the suite quick; tests that need pace set their own.
os.environ.setdefault("SCRIPTED_TOKENS_PER_SECOND", "400")
os.environ.setdefault("SCRIPTED_REPLY_TOKENS", "40")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", "chatsite-test")
# The embedded default unless the caller points the suite at services.
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
