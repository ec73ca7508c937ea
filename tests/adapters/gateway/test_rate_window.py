"""Which window counts a key's requests per minute, by how many web processes share them."""

from __future__ import annotations

import pytest
from django.test import override_settings

from llmux_site.gateway.keys import LocalWindow
from llmux_site.gateway.sqlite_window import SqliteWindow
from models_app.adapters.gateway.key_table import rate_window


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, LocalWindow),  # `llmux serve` runs it alone: its memory sees every request
        (2, SqliteWindow),  # siblings on this host: one file counts them all
        (0, SqliteWindow),  # started by hand, siblings unknown: the shared file, to be safe
    ],
)
def test_without_redis_the_window_is_shared_unless_the_process_is_alone(
    count: int, expected: type
) -> None:
    with override_settings(REDIS_URL=None, LLMUX_WEB_PROCESS_COUNT=count):
        assert type(rate_window()) is expected
