"""An outsider's client of a live server: signs in through the real form, then speaks HTTP and WebSockets.

Only what any visitor can do: GET and POST pages with their cookies and CSRF token, call
the JSON API, open WebSockets with any headers it likes.
"""

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

TIMEOUT_S = 10


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@dataclass
class Visitor:
    """One browser-like visitor of `url`, with its own cookie jar."""

    url: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def cookie(self, name: str) -> str | None:
        return next((cookie.value for cookie in self.jar if cookie.name == name), None)

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.jar)

    def request(
        self, method: str, path: str, *, form: dict | None = None, body: dict | None = None, headers: dict | None = None
    ) -> Answer:
        """Make one request; cookie writes carry the CSRF token as a page or the page script would."""
        headers = dict(headers or {})
        data = None
        if form is not None:
            data = urllib.parse.urlencode({"csrfmiddlewaretoken": self.cookie("csrftoken") or "", **form}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method != "GET" and self.cookie("csrftoken"):
            headers.setdefault("X-CSRFToken", self.cookie("csrftoken"))
            headers.setdefault("Referer", self.url + "/")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=TIMEOUT_S) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), error.read())

    def sign_in(self, username: str, password: str) -> Answer:
        """Sign in through the sign-in form, as a person would."""
        self.request("GET", "/accounts/login/")
        return self.request("POST", "/accounts/login/", form={"username": username, "password": password})

    def sign_out(self) -> Answer:
        return self.request("POST", "/accounts/logout/", form={})

    def websocket(self, thread_id: str, *, after: int | str = 0, origin: str | None = None) -> ClientConnection:
        """Open the thread's WebSocket with this visitor's cookies and an Origin (the site's own by default)."""
        address = self.url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/?after={after}"
        return ws_connect(
            address,
            origin=origin or self.url,
            additional_headers={"Cookie": self.cookie_header},
            open_timeout=TIMEOUT_S,
            max_size=None,
        )


def frames_until(socket: ClientConnection, kind: str, *, timeout: float = TIMEOUT_S) -> list[dict]:
    """Return the frames a socket receives up to and including the first of type `kind`."""
    received = []
    while True:
        frame = json.loads(socket.recv(timeout=timeout))
        received.append(frame)
        if frame["type"] == kind:
            return received


class EventStream:
    """An event stream read record by record, as EventSource reads it."""

    def __init__(self, visitor: Visitor, path: str) -> None:
        request = urllib.request.Request(visitor.url + path, headers={"Cookie": visitor.cookie_header})
        self.response = urllib.request.urlopen(request, timeout=TIMEOUT_S)

    def record(self) -> dict[str, str] | None:
        """Return the next record's fields (comments skipped), or None when the stream ended."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def records_until(self, event: str) -> list[dict[str, str]]:
        records = []
        while (record := self.record()) is not None:
            records.append(record)
            if record.get("event") == event:
                return records
        raise AssertionError(f"the stream ended before an {event!r} record: {records}")

    def close(self) -> None:
        self.response.close()
