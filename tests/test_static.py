"""The web process serves the pages' static files itself, outside debug too (daphne serves none)."""


def test_static_files_are_served_outside_debug(client, settings):
    """The thread page's script and stylesheet are served with their content types."""
    assert not settings.DEBUG
    script = client.get("/static/chat/thread.js")
    assert script.status_code == 200 and "javascript" in script["Content-Type"]
    stylesheet = client.get("/static/chat/chat.css")
    assert stylesheet.status_code == 200 and stylesheet["Content-Type"].startswith("text/css")
