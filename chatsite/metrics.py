"""`GET /metrics`: Prometheus metrics (streaming/metrics.py), for scrapers let in by configuration.

Off unless METRICS_TOKEN or METRICS_ALLOWED_NETWORKS is set: then 404, so an unconfigured
deployment shows nothing. A scraper sends the token as the password of HTTP basic auth (any
user name), because `Authorization: Bearer` belongs to the API tokens. When both are set, a
scrape must pass both.
"""

import base64
import binascii
import hmac
import ipaddress

from django.conf import settings
from django.core import checks
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streaming.metrics import Scrape


def allowed_networks_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Refuse at startup an entry of METRICS_ALLOWED_NETWORKS that is no IP network: every scrape would fail on it."""
    errors: list[checks.CheckMessage] = []
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            error = f"METRICS_ALLOWED_NETWORKS: {network!r} is no IP network."
            hint = "Give addresses or networks, comma-separated: 10.0.0.0/8,192.0.2.7"
            errors.append(checks.Error(error, hint=hint, id="chatsite.E001"))
    return errors


def _in_allowed_networks(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)


def _basic_auth_password(authorization: str) -> str | None:
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        _, separator, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if separator else None


def _holds_token(request: HttpRequest) -> bool:
    password = _basic_auth_password(request.headers.get("Authorization", ""))
    return password is not None and hmac.compare_digest(password.encode(), settings.METRICS_TOKEN.encode())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Answer with the metrics in Prometheus' text format, to a scraper the settings let in."""
    if not settings.METRICS_TOKEN and not settings.METRICS_ALLOWED_NETWORKS:
        raise Http404("Metrics are off.")
    if settings.METRICS_ALLOWED_NETWORKS and not _in_allowed_networks(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse("Not from an allowed network.\n", status=403, content_type="text/plain")
    if settings.METRICS_TOKEN and not _holds_token(request):
        response = HttpResponse("The metrics token is missing or wrong.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Basic realm="metrics"'
        return response
    return HttpResponse(generate_latest(Scrape()), content_type=CONTENT_TYPE_LATEST)
