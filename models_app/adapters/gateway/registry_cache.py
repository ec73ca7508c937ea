"""The registry (routes, aliases, mode) as this web process last read it, and its key table."""

from __future__ import annotations

from dataclasses import dataclass

from llmux_site.gateway.errors import GatewayError
from models_app import selectors
from models_app.adapters.gateway.db_thread import DbThread
from models_app.adapters.gateway.key_table import GatewayKeys
from models_app.models import Mode

# The host bus says when the registry changed; this poll only catches what it cannot (a
# message lost to a full socket buffer, a change made by raw SQL).
REGISTRY_POLL = 1.0
KEYS_POLL = 10.0  # the key table's fallback re-read (notices and first use come first)
DEFAULT_REQUEST_TIMEOUT = 300.0  # until the registry could be read once


@dataclass
class RegistryCache:
    """The cached `GatewayRegistry`, refreshed by the backend's refresher, and the key table
    (reloaded beside it, its usage flushed)."""

    keys: GatewayKeys | None = None
    registry: selectors.GatewayRegistry | None = None
    _stale: bool = False  # the bus said the registry changed
    _read_at: float = 0.0
    _keys_stale: bool = False
    _keys_read_at: float = 0.0

    def load_now(self) -> None:
        """Read the registry (sync, at import of the ASGI module)."""
        self.registry = selectors.gateway_registry()

    @property
    def loaded(self) -> bool:
        return self.registry is not None

    async def load(self, db: DbThread) -> selectors.GatewayRegistry:
        """The registry, read once if it never was."""
        if self.registry is None:
            self.registry = await db.run(selectors.gateway_registry)
        return self.registry

    def current(self) -> selectors.GatewayRegistry:
        """The registry, once `load` or `load_now` has read it."""
        assert self.registry is not None, "the registry was never read"
        return self.registry

    def resolve(self, name: str) -> str | None:
        return self.registry.names.get(name) if self.registry else None

    def request_timeout(self) -> float:
        return self.registry.request_timeout if self.registry else DEFAULT_REQUEST_TIMEOUT

    def model(self, name: str) -> selectors.GatewayModel | None:
        return self.registry.models.get(name) if self.registry is not None else None

    def check_allowed(self, model: str) -> None:
        """Raise the client's 503 unless the registry lets a request switch to `model`."""
        registry = self.current()
        if not registry.models[model].enabled:
            raise GatewayError(503, f"Model `{model}` is disabled.")
        if registry.mode == Mode.MANUAL and model != registry.pinned:
            raise GatewayError(
                503,
                f"llmux is in manual mode serving {registry.pinned or 'no model'}; "
                f"model `{model}` is not switched in automatically.",
            )

    def mark_stale(self) -> None:
        """A registry notice: the registry and the keys are read again at the next pass."""
        self._stale = self._keys_stale = True

    async def refresh(self, db: DbThread, now: float) -> None:
        """Re-read the registry when it is stale or its poll is due (and it changed)."""
        if self._stale or now - self._read_at >= REGISTRY_POLL:
            self._stale, self._read_at = False, now
            await self._refresh_registry(db)
            await self._refresh_keys(db, now)

    async def _refresh_registry(self, db: DbThread) -> None:
        fingerprint = await db.run(selectors.registry_fingerprint)
        if self.registry is None or fingerprint != self.registry.fingerprint:
            self.registry = await db.run(selectors.gateway_registry)

    async def _refresh_keys(self, db: DbThread, now: float) -> None:
        if self.keys is None:
            return
        # Off the switch path: a key made elsewhere arrives with a registry notice (or at
        # its first use, GatewayKeys.identify), so the table is re-read only then or every
        # KEYS_POLL; usage is written only when some was gathered.
        if self._keys_stale or now - self._keys_read_at >= KEYS_POLL:
            self._keys_stale, self._keys_read_at = False, now
            await db.run(self.keys.reload)
        if self.keys.pending():
            await db.run(self.keys.flush)

    async def flush_keys(self, db: DbThread) -> None:
        """Write the keys' usage not written yet (at shutdown)."""
        if self.keys is not None:
            await db.run(self.keys.flush)
