"""Raw HTTP for the conformance scenarios: status, headers and body exactly as sent.

The openai package would hide the shapes under test (it fills defaults, drops unknown
keys), so the scenarios read the bytes; one scenario uses the package on top.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.simulator.harness import UnixHTTPConnection

TIMEOUT = 120.0  # a real vLLM on 2 busy cores answers in well under a second; headroom


@dataclass(frozen=True)
class Event:
    """One server-sent event: its `event:` name (None without one) and its `data:`."""

    name: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def events(self) -> list[Event]:
        """The body as server-sent events, in order."""
        found = []
        for block in self.body.decode().split("\n\n"):
            if not block.strip():
                continue
            name, data = None, []
            for line in block.split("\n"):
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data.append(line[len("data: ") :])
            found.append(Event(name, "\n".join(data)))
        return found


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: a Unix socket, or a loopback TCP port."""

    uds: str | None = None
    port: int | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    def connection(self) -> http.client.HTTPConnection:
        if self.uds is not None:
            return UnixHTTPConnection(self.uds, TIMEOUT)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> Reply:
        payload = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = dict(self.extra_headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn = self.connection()
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            headers_in = {name.lower(): value for name, value in response.getheaders()}
            return Reply(response.status, headers_in, response.read())
        finally:
            conn.close()
