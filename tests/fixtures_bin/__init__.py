"""Tiny programs that stand in for engines in supervisor tests (run as scripts)."""

from pathlib import Path

FIXTURES_BIN = Path(__file__).resolve().parent
HTTP_ENGINE = FIXTURES_BIN / "http_engine.py"
STUBBORN = FIXTURES_BIN / "stubborn.py"
EARLIER_WORKER = FIXTURES_BIN / "earlier_worker.py"
