"""Before a drain is acknowledged the gateway drops its idle connections to the engine:
CRIU cannot dump an engine whose socket another process holds the other end of."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llmux_site.core.addresses import ListenAddress
from llmux_site.gateway.proxy import UpstreamPool

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


async def test_closing_an_upstream_closes_its_idle_connections(
    short_tmp_dir: Path,
) -> None:
    open_connections = 0
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        open_connections += 1
        try:
            while True:  # keep-alive: one answer per request, until the client closes
                await reader.readuntil(b"\r\n\r\n")
                writer.write(ANSWER)
                await writer.drain()
        except asyncio.IncompleteReadError:
            open_connections -= 1
            closed.set()
        finally:
            writer.close()

    path = str(short_tmp_dir / "e.sock")
    server = await asyncio.start_unix_server(serve, path)
    pool = UpstreamPool()
    try:
        upstream = pool.get(ListenAddress.unix(path))
        async with upstream.session.get(upstream.url(b"/health", b"")) as reply:
            assert await reply.read() == b"ok"
        assert open_connections == 1  # kept alive in the pool

        await pool.close(upstream.address)
        await asyncio.wait_for(closed.wait(), 5)

        assert open_connections == 0
        assert pool.get(upstream.address) is not upstream  # a new one for later requests
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()
