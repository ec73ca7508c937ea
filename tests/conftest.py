"""Shared fixtures. Plugins live in tests/plugins so each concern stays small."""

pytest_plugins = [
    "tests.plugins.process_guard",
    "tests.plugins.engines",
    "tests.plugins.criu",
]
