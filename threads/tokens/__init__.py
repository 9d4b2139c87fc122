"""API tokens: bearer credentials for clients that are not a browser, on HTTP, SSE and WebSockets.

A token's secret is shown once, when it is made; only its sha256 is stored, so the
database cannot give a usable token away. A request that carries
`Authorization: Bearer <secret>` is authenticated by the token alone: its cookies are
ignored, and it needs no CSRF token, because a browser never attaches that header on
its own to a cross-site request (CSRF protects cookies, which it does attach).

Revoking a token also ends what it opened: its WebSockets close with 4401 and its event
streams end. Each such stream joins the token's channel-layer group, where the revocation
is published after commit, and asks `api_token_is_valid` now and then in case that notice
is lost: the token is the stream's `AccessGrant` (streaming/subscription.py).

- `services.py`: make, make for oneself (rate limited) and revoke tokens.
- `selectors.py`: authenticate a secret, check a token, and the grant a stream holds.
- `middleware.py`: bearer authentication for HTTP requests and WebSocket handshakes.
- `views.py`, `forms.py`: the page where a person makes and revokes their tokens.
"""
