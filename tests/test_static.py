"""The web process serves the pages' static files itself, outside debug too (daphne serves none)."""


def test_static_files_are_served_outside_debug(client, settings):
    """The thread page's script and stylesheet are served with their content types."""
    assert not settings.DEBUG
    script = client.get("/static/chat/thread.js")
    assert script.status_code == 200 and "javascript" in script["Content-Type"]
    stylesheet = client.get("/static/chat/chat.css")
    assert stylesheet.status_code == 200 and stylesheet["Content-Type"].startswith("text/css")


def test_vendored_modules_are_served_as_javascript(client, settings):
    """The vendored markdown-it and highlight.js load as ES modules, which browsers take only as JavaScript."""
    assert not settings.DEBUG
    for path in ("/static/vendor/markdown-it/markdown-it.min.js", "/static/vendor/highlight.js/highlight.min.js"):
        module = client.get(path)
        assert module.status_code == 200 and "javascript" in module["Content-Type"], path
        assert b"export" in b"".join(module.streaming_content), path
