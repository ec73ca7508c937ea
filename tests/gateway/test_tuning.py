"""Web-process tuning for the gateway: Twisted skips work daphne never uses."""

from __future__ import annotations

import pytest
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from llmux_site.gateway.tuning import skip_twisted_access_log, skip_twisted_form_parsing


@pytest.fixture(autouse=True)
def restore_twisted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tunings patch Twisted's classes; undo that after each test."""
    monkeypatch.setattr(http.HTTPFactory, "log", http.HTTPFactory.log)
    if "_parsePOSTFormSubmission" in vars(http.Request):
        monkeypatch.setattr(
            http.Request, "_parsePOSTFormSubmission", http.Request._parsePOSTFormSubmission
        )
    else:
        monkeypatch.setattr(http.Request, "_parsePOSTFormSubmission", None, raising=False)
        monkeypatch.delattr(http.Request, "_parsePOSTFormSubmission")


def test_twisted_requests_stop_parsing_form_bodies() -> None:
    assert http.Request(DummyChannel())._parsePOSTFormSubmission is True

    assert skip_twisted_form_parsing() is True

    request = http.Request(DummyChannel())

    assert request._parsePOSTFormSubmission is False
    assert skip_twisted_form_parsing() is True  # idempotent


def test_twisted_stops_writing_its_own_access_log() -> None:
    written: list[str] = []

    class LogFile:
        def write(self, line: str) -> None:
            written.append(line)

    factory = http.HTTPFactory()
    factory._logFile = LogFile()
    request = http.Request(DummyChannel())
    factory.log(request)
    assert written, "the check cannot fail: Twisted no longer logs this way"

    assert skip_twisted_access_log() is True
    written.clear()
    factory.log(request)

    assert written == []
