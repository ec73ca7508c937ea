"""What the web server allows a request before the application sees it.

Read from the environment here, not from Django's settings, because the server applies
them before any application (Django's or the standalone gateway's) is loaded;
``llmux_site.settings`` reads them through the same function so both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from llmux_site.envconf import env_int

DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
DEFAULT_HEADER_TIMEOUT_SECS: Final = 10
DEFAULT_BODY_TIMEOUT_SECS: Final = 60
# The request line and headers together; Twisted's own limit (and each line's).
MAX_HEADER_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Body size and the deadlines of a request's headers and body."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECS  # first byte to the end of headers
    body_timeout: float = DEFAULT_BODY_TIMEOUT_SECS  # end of headers to the end of the body
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """``LLMUX_MAX_BODY_BYTES``, ``LLMUX_HEADER_TIMEOUT_SECS``, ``LLMUX_BODY_TIMEOUT_SECS``."""
        return cls(
            max_body_bytes=env_int(
                "LLMUX_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024, environ=environ
            ),
            header_timeout=env_int(
                "LLMUX_HEADER_TIMEOUT_SECS",
                DEFAULT_HEADER_TIMEOUT_SECS,
                minimum=1,
                maximum=3600,
                environ=environ,
            ),
            body_timeout=env_int(
                "LLMUX_BODY_TIMEOUT_SECS",
                DEFAULT_BODY_TIMEOUT_SECS,
                minimum=1,
                maximum=86400,
                environ=environ,
            ),
        )
