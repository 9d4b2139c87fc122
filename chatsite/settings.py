"""Settings for chatsite, driven by environment variables (see README, "Configuration")."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# No default outside debug. Settings still load without one, so that commands which sign
# nothing (check, migrate, makemigrations, streamworker) run anywhere; a web process
# refuses to start without it (chatsite/asgi.py), and Django refuses to sign with an empty one.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key" if DEBUG else "")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "threads",
    "streaming",
    # The project's own commands: runcluster and streambench drive the whole site.
    "chatsite",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chatsite.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "threads.tokens.middleware.bearer_token_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Scripts only from our own files (no inline script, no event-handler attributes), no
# framing; inline styles stay allowed for the admin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Outside debug the site is served over HTTPS (behind a proxy that sets X-Forwarded-Proto).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
# Production defaults that `manage.py check --deploy` asks for; a site whose subdomains are not
# all HTTPS, or that will not join the browsers' preload list, turns these off.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=not DEBUG)
# Plain-HTTP requests are redirected to HTTPS; behind a TLS-terminating proxy this needs
# DJANGO_BEHIND_PROXY, or every request would look plain. Probes and scrapers speak plain
# HTTP inside the network, so their paths are exempt.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
BEHIND_PROXY = env.bool("DJANGO_BEHIND_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
# How many proxies append to X-Forwarded-For in front of daphne: the client's address is the
# entry that many from the end (chatsite/forwarded.py). Without a proxy the header is ignored.
PROXY_HOPS = env.int("DJANGO_PROXY_HOPS", default=1) if BEHIND_PROXY else 0

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so two writers queue
    # up instead of failing with "database is locked" on lock upgrade.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Worker and consumer code reaches the database through short
    # database_sync_to_async calls, each of which "closes" its connection:
    # a pool makes that a cheap check-in instead of a new Postgres backend.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool checks a connection before lending it: after a database restart, idle pooled
    # connections are dead, and each would otherwise fail one request or write.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    options = DATABASES["default"].setdefault("OPTIONS", {})
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        # Parameters bound by the server, and a statement a connection has run 50 times
        # prepared there: the send's and the claim's statements are parsed and planned once per
        # pooled connection rather than on every run. Not after psycopg's 5: a round's batches
        # are texts of many lengths, psycopg keeps 100 prepared per connection, and preparing
        # and dropping them cost the worker and web processes what it saved PostgreSQL.
        # Django leaves both off for transaction poolers: PgBouncer before 1.21 needs this off.
        options.update(server_side_binding=True, prepare_threshold=50)
    options["pool"] = {
        "min_size": 2,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        # How long a checkout waits for a connection. While the database is down every
        # checkout waits this long: short, so that workers retry and requests fail fast.
        "timeout": 3,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub fan-out, bounded per subscriber: see streaming/layers.py.
            "BACKEND": "streaming.layers.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="chatsite"),
                # A subscriber that falls this far behind loses live events; the
                # consumer repairs the gap from the database (invariant I3).
                "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=500),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env.int("CHANNEL_LAYER_CAPACITY", default=500), "expiry": 60},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
CSRF_FAILURE_VIEW = "threads.api.csrf_failure"
# Sign-in throttling (threads/signin.py): wrong passwords per (username, address) and per address
# within the cool-off; past either, sign-in from that address is refused until the cool-off passes.
SIGNIN_FAILURES_PER_ACCOUNT_AND_ADDRESS = env.int("SIGNIN_FAILURES_PER_ACCOUNT_AND_ADDRESS", default=5)
SIGNIN_FAILURES_PER_ADDRESS = env.int("SIGNIN_FAILURES_PER_ADDRESS", default=20)
SIGNIN_COOLOFF_SECONDS = env.int("SIGNIN_COOLOFF_SECONDS", default=15 * 60)
# Who may make an account: `open` (anyone), `closed` (operators only) or `invite` (with a
# single-use code from `manage.py invite`). Every per-person limit is per account.
CHAT_SIGNUP = env.str("CHAT_SIGNUP", default="open")
# Whether a signed-out visitor may open a thread's share link (read only); signed-in people always may.
CHAT_PUBLIC_LINKS = env.bool("CHAT_PUBLIC_LINKS", default=False)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "thread-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `collectstatic` (the Procfile's release step) writes hashed, compressed copies here (chatsite/staticfiles.py).
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "chatsite.staticfiles.StaticFilesStorage"},
}
# Files not collected keep their plain names and are served from the source folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# LOG_FORMAT=json writes one JSON object a line with the same fields (chatsite/logformat.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT is {LOG_FORMAT!r}: use text or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "chatsite.logformat.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- Chat -----------------------------------------------------------------------

ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
CHAT_PROVIDER = env.str("CHAT_PROVIDER", default="anthropic" if ANTHROPIC_API_KEY else "scripted")
CHAT_SYSTEM_PROMPT = env.str(
    "CHAT_SYSTEM_PROMPT",
    default="You are a helpful assistant. Answer clearly and concisely.",
)
# Longest user message accepted; longer ones are refused with `too_long` (HTTP 413).
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32_000)
# Sends, retries and regenerates per person per minute, across all their threads, deleted ones
# included; more are refused with `rate_limited` (429).
CHAT_SENDS_PER_MINUTE = env.int("CHAT_SENDS_PER_MINUTE", default=20)
# Threads a person may start per hour (the API, the pages, a new id on /api/chat); more are refused
# with `rate_limited` (429). Deleting threads gives none back.
CHAT_THREADS_PER_HOUR = env.int("CHAT_THREADS_PER_HOUR", default=100)
# API tokens a person may make per hour on the tokens page; more are refused with `rate_limited` (429).
API_TOKENS_PER_HOUR = env.int("API_TOKENS_PER_HOUR", default=10)
# Open streams (WebSockets and event streams) per person, per web process; more are refused
# with HTTP 429 `rate_limited` or WebSocket close 4429.
CHAT_MAX_STREAMS_PER_USER = env.int("CHAT_MAX_STREAMS_PER_USER", default=30)
# The most threads or messages one page of the JSON API holds (`limit`); more is a `bad_request`.
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=200)
# The most bytes of messages one answer of `/api/threads/<id>` or its `/messages` holds (at least
# one message, whatever its size); the rest is on the page `next` names.
API_MAX_RESPONSE_BYTES = env.int("API_MAX_RESPONSE_BYTES", default=1024 * 1024)

ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="") or None
ANTHROPIC_MODEL = env.str("ANTHROPIC_MODEL", default="claude-sonnet-5-5")
ANTHROPIC_MAX_TOKENS = env.int("ANTHROPIC_MAX_TOKENS", default=4096)
# Tokens of extended thinking per model call (at least 1024); unset or 0: no thinking. A request's
# max_tokens is ANTHROPIC_MAX_TOKENS plus this budget.
ANTHROPIC_THINKING_BUDGET = env.int("ANTHROPIC_THINKING_BUDGET", default=0)
# Base of the exponential backoff between the provider's mid-stream retries.
ANTHROPIC_RETRY_BACKOFF_SECONDS = env.float("ANTHROPIC_RETRY_BACKOFF_SECONDS", default=1.0)

# The tools the model may call: dotted paths to tool objects (`streaming.tools.Tool`).
CHAT_TOOLS = env.list(
    "CHAT_TOOLS",
    default=["threads.tools.calculator", "threads.tools.current_time", "threads.tools.search_threads"],
)
# The most model calls one reply makes (each but the last one calling tools); past it the reply
# ends failed, `tool_steps_exceeded`, its text kept.
CHAT_MAX_TOOL_STEPS = env.int("CHAT_MAX_TOOL_STEPS", default=8)

SCRIPTED_TOKENS_PER_SECOND = env.float("SCRIPTED_TOKENS_PER_SECOND", default=40.0)
SCRIPTED_REPLY_TOKENS = env.int("SCRIPTED_REPLY_TOKENS", default=120)

# --- Streaming ------------------------------------------------------------------

# The concrete models the engine (the `streaming` app) writes conversations into, as
# AUTH_USER_MODEL names the user model: the engine defines their fields, never imports them.
STREAM_THREAD_MODEL = "threads.Thread"
STREAM_MESSAGE_MODEL = "threads.Message"

STREAM_FLUSH_MS = env.int("STREAM_FLUSH_MS", default=40)
# A flush happens early once this much text is buffered, so one chunk stays small.
STREAM_FLUSH_MAX_CHARS = env.int("STREAM_FLUSH_MAX_CHARS", default=2048)
STREAM_INLINE_WORKER = env.bool("STREAM_INLINE_WORKER", default=True)
# A reply costs its worker little beyond its provider stream: each flush tick commits every
# reply's text in one transaction (streaming/committer.py).
STREAM_WORKER_CONCURRENCY = env.int("STREAM_WORKER_CONCURRENCY", default=500)
# Idle workers are woken through the channel layer; this poll is only the safety net.
STREAM_WORKER_POLL_SECONDS = env.float("STREAM_WORKER_POLL_SECONDS", default=2.0)
STREAM_BACKLOG_PAGE_SIZE = env.int("STREAM_BACKLOG_PAGE_SIZE", default=500)
# A backlog page also ends once its events hold this many bytes of text: what a paused reader
# keeps in memory is one page, whatever its messages' lengths.
STREAM_BACKLOG_PAGE_BYTES = env.int("STREAM_BACKLOG_PAGE_BYTES", default=256 * 1024)
# A `reset` carries the newest messages that fit in this many bytes, and `next` for the earlier
# ones: well under the web server's 256 KiB frame limit (the Procfile's daphne flags).
STREAM_RESET_MAX_BYTES = env.int("STREAM_RESET_MAX_BYTES", default=192 * 1024)
# When a reply ends, its delta rows (one per flush) are compacted into a few segment rows, in
# the transaction of its `end` event; clients see the same events either way (streaming/compaction.py).
STREAM_COMPACT_REPLIES = env.bool("STREAM_COMPACT_REPLIES", default=True)
# Invariant I10, enforced by chatsite.daphne_server (the Procfile's `web`): once a WebSocket or
# event stream holds this many bytes unsent, sending to it waits until the client reads; one
# that takes nothing for STREAM_CLIENT_STALL_SECONDS is closed (WebSocket 4008: reconnect with
# your cursor).
STREAM_CLIENT_BUFFER_BYTES = env.int("STREAM_CLIENT_BUFFER_BYTES", default=1024 * 1024)
STREAM_CLIENT_STALL_SECONDS = env.float("STREAM_CLIENT_STALL_SECONDS", default=10.0)
# A client that reads, but so slowly that it stays over STREAM_CLIENT_BUFFER_BYTES this long
# without catching up (a trickle reader of a long backlog), is closed as well (4008).
STREAM_CLIENT_BEHIND_SECONDS = env.float("STREAM_CLIENT_BEHIND_SECONDS", default=30.0)
# A subscriber that has heard nothing for this long while a reply streams asks the
# database whether it missed an event (invariant I3: repaired within 2 s).
STREAM_REPAIR_SECONDS = env.float("STREAM_REPAIR_SECONDS", default=1.0)
# A stream opened under a revocable grant (an API token) ends at once on the revocation
# notice; should that notice be lost, its own check of the grant this often ends it.
STREAM_ACCESS_RECHECK_SECONDS = env.float("STREAM_ACCESS_RECHECK_SECONDS", default=30.0)
# A watcher of a thread renews their presence this often; one not renewed for three times as
# long (their web process died) drops out of everyone's `presence` frame.
STREAM_PRESENCE_HEARTBEAT_SECONDS = env.float("STREAM_PRESENCE_HEARTBEAT_SECONDS", default=3.0)
# The live frames a web process queues for one reader (streaming/hub.py): a reader further
# behind loses them and catches up from the database when it reads again (I10).
STREAM_SUBSCRIBER_QUEUE_FRAMES = env.int("STREAM_SUBSCRIBER_QUEUE_FRAMES", default=2000)
GENERATION_LEASE_SECONDS = env.float("GENERATION_LEASE_SECONDS", default=15.0)
GENERATION_MAX_ATTEMPTS = env.int("GENERATION_MAX_ATTEMPTS", default=3)
# How long a worker retries a reply's write while the database is unreachable (a restart, a
# failover) before it leaves the reply to a takeover. Shorter than the lease, so that a worker
# that gets through still holds it.
GENERATION_WRITE_RETRY_SECONDS = env.float("GENERATION_WRITE_RETRY_SECONDS", default=10.0)

# --- Operations -----------------------------------------------------------------

# The cyclic garbage collector of the web and worker processes (streaming/collector.py): what
# startup made is frozen out of its walks, and it collects after this many new objects
# (then every 20 young collections, and the whole heap rarely) rather than Python's 700, 10, 10.
# "0,0,0" turns automatic collection off.
_gc_thresholds = env.list("GC_THRESHOLDS", default=["10000", "20", "100"])
if len(_gc_thresholds) != 3 or not all(value.isdigit() for value in _gc_thresholds):
    raise ImproperlyConfigured(
        f"GC_THRESHOLDS is {','.join(_gc_thresholds)!r}: give three whole numbers, such as 10000,20,100."
    )
GC_THRESHOLDS = [int(value) for value in _gc_thresholds]


# GET /metrics is off (404) unless one of these is set; with both, a scrape must pass both.
# The token is sent as the password of HTTP basic auth; networks are CIDRs such as 10.0.0.0/8.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])

# `manage.py prunechunks` deletes the chunk rows of messages that ended this many days ago.
CHUNK_RETENTION_DAYS = env.int("CHUNK_RETENTION_DAYS", default=30)
