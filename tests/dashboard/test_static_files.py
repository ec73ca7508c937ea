"""Static assets through the web process's ASGI handler: a bad path is a 404, never a
crash; text is sent gzipped, and a URL `{% static %}` wrote is cached for good."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.templatetags.static import static

from dashboard.assets import asset_path
from llmux_site.pages import static_pages

Message = dict[str, Any]


async def downstream(scope: Message, receive: Any, send: Any) -> None:
    """Stands for Django: answers 299 so a test sees a path that was not served as static."""
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def get(path: str) -> tuple[int, bytes]:
    """One GET through the handler as daphne would call it: (status, body)."""
    status, _, body = await fetch(path)
    return status, body


async def fetch(
    path: str, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET through the handler: (status, headers, body)."""
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [
            (b"host", b"127.0.0.1"),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }
    await static_pages(downstream)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answered = {k.decode().lower(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], answered, body


@pytest.mark.parametrize(
    "path",
    [
        "/static/../x",
        "/static/..",
        "/static/llmux/../../manage.py",
        "/static/llmux/../../llmux_site/settings.py",
        "/static/llmux/nothing-here.js",
        "/static/vendor/nothing-here.js",
        "/static/llmux/a\x00b.js",
    ],
)
async def test_it_answers_404_for_a_path_it_does_not_serve(path: str) -> None:
    status, body = await get(path)
    assert status == 404 and b"SECRET" not in body


async def test_it_serves_an_asset_and_hands_other_paths_on() -> None:
    status, body = await get("/static/llmux/dashboard.js")
    assert status == 200 and b"llmux" in body
    assert (await get("/static/vendor/plotly-cartesian.min.js"))[0] == 200
    assert (await get("/login/"))[0] == 299


async def test_it_sends_text_gzipped_to_a_client_that_takes_it() -> None:
    plotly = asset_path("vendor/plotly-cartesian.min.js")
    assert plotly is not None, "scripts/install-assets.sh installs it"
    status, headers, body = await fetch(
        "/static/vendor/plotly-cartesian.min.js", headers={"Accept-Encoding": "gzip, deflate, br"}
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == plotly.read_bytes()
    assert len(body) < 700_000 < 1_400_000 < len(plotly.read_bytes())
    status, headers, body = await fetch("/static/vendor/plotly-cartesian.min.js")
    assert "content-encoding" not in headers and body == plotly.read_bytes()
    refused = {"Accept-Encoding": "gzip;q=0, identity"}
    assert "content-encoding" not in (await fetch("/static/llmux/charts.js", headers=refused))[1]


async def test_a_url_the_static_tag_wrote_is_cached_for_good_and_others_revalidated() -> None:
    url = urlsplit(static("llmux/swaps.js"))
    assert url.query.startswith("v=")
    status, headers, _ = await fetch(url.path, url.query)
    assert status == 200 and headers["cache-control"] == "public, max-age=31536000, immutable"
    status, plain, _ = await fetch(url.path)  # no version: kept, but asked about each time
    assert status == 200 and plain["cache-control"] == "no-cache" and plain["etag"]
    stale = await fetch(url.path, "v=0123456789abcdef")  # an older file's URL
    assert stale[1]["cache-control"] == "no-cache"
    status, again, body = await fetch(url.path, headers={"If-None-Match": plain["etag"]})
    assert status == 304 and body == b"" and again["etag"] == plain["etag"]


async def test_a_changed_file_gets_a_new_url_and_is_served_anew(tmp_path: Any) -> None:
    from django.test import override_settings

    (tmp_path / "x.css").write_text("body { color: red; }" * 100)
    with override_settings(STATICFILES_DIRS=[tmp_path]):
        from django.contrib.staticfiles import finders

        finders.get_finder.cache_clear()
        try:
            first = urlsplit(static("x.css"))
            (tmp_path / "x.css").write_text("body { color: blue; }" * 100)
            second = urlsplit(static("x.css"))
            assert first.query != second.query
            status, _, body = await fetch(second.path, second.query)
            assert status == 200 and b"blue" in body
        finally:
            finders.get_finder.cache_clear()
    assert (await get("/login/"))[0] == 299
