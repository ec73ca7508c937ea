"""Which vLLM release's control API the simulator answers like (`--sim-vllm-api VERSION`).

vLLM's sleep and wake routes changed across releases while keeping their paths: what the calls
answer, whether `/sleep` takes a `mode`, what level 0 means. docs/ENGINES.md lists the families
and the vLLM files and releases they were read from; each property below names the release
that changed it. Releases outside 0.15 to 0.33 were not read, so they are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OLDEST_MINOR = 15
NEWEST_MINOR = 33
DEFAULT_VERSION = "0.33"
# `--sim-legacy-api` (empty bodies, "older vLLM") is the 0.17 to 0.31 family.
LEGACY_VERSION = "0.17"
_VERSION = re.compile(r"^0\.(\d+)(?:\.(\d+))?$")


class VllmApiError(ValueError):
    """A `--sim-vllm-api` value that names no release the simulator models."""


@dataclass(frozen=True, slots=True)
class VllmApi:
    """The control-API behaviour of one vLLM release, 0.15 to 0.33."""

    minor: int
    patch: int = 0

    @property
    def version(self) -> str:
        """What `/version` reports (the simulator's suffix is added by the route)."""
        return f"0.{self.minor}.{self.patch}"

    @property
    def family(self) -> str:
        """The first release of the family this one belongs to (docs/ENGINES.md)."""
        if self.minor >= 32:
            return "0.32"
        return "0.17" if self.minor >= 17 else "0.15"

    @property
    def json_bodies(self) -> bool:
        """0.32 answers /sleep, /wake_up and /release_kv_cache_memory with JSON; before, an
        empty 200 (while still honouring wake tags)."""
        return self.minor >= 32

    @property
    def sleep_modes(self) -> bool:
        """0.17 added `mode=abort|wait|keep` and made level 0 a pause of scheduling. Before,
        `mode` is ignored and level 0 discards everything, like level 2."""
        return self.minor >= 17

    @property
    def prefix_reset_reports(self) -> bool:
        """0.26: /reset_prefix_cache answers `{"success": bool}` instead of an empty 200."""
        return self.minor >= 26

    @property
    def release_kv_cache_route(self) -> bool:
        """0.31 added POST /release_kv_cache_memory."""
        return self.minor >= 31


def parse_vllm_api(text: str) -> VllmApi:
    """`0.N` or `0.N.P` for a release from 0.15 to 0.33."""
    match = _VERSION.match(text.strip())
    if not match:
        raise VllmApiError(f"not a vLLM version: {text!r} (expected 0.N or 0.N.P)")
    minor, patch = int(match.group(1)), int(match.group(2) or 0)
    if not OLDEST_MINOR <= minor <= NEWEST_MINOR:
        raise VllmApiError(
            f"vLLM {text.strip()} is outside the releases the simulator models "
            f"(0.{OLDEST_MINOR} to 0.{NEWEST_MINOR})"
        )
    return VllmApi(minor, patch)
