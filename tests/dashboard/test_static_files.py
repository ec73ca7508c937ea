"""Static assets through the web process's ASGI handler: a bad path is a 404, never a crash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmux_site.pages import static_pages

Message = dict[str, Any]


async def downstream(scope: Message, receive: Any, send: Any) -> None:
    """Stands for Django: answers 299 so a test sees a path that was not served as static."""
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def get(path: str) -> tuple[int, bytes]:
    """One GET through the handler as daphne would call it: (status, body)."""
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
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }
    await static_pages(downstream)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


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
    assert (await get("/static/vendor/plotly.min.js"))[0] == 200
    assert (await get("/login/"))[0] == 299
