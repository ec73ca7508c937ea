"""Process-wide tuning for the web process that serves the gateway under daphne.

Call ``tune_web_process()`` once, at import of the ASGI module, before daphne serves.
"""

from __future__ import annotations

import importlib

from llmux_site.core.threads import quick_thread_handoff


def skip_twisted_form_parsing() -> bool:
    """Stop Twisted parsing every POST body with a Content-Type as an HTML form.

    Twisted's ``Request.requestReceived`` runs the Content-Type header through the stdlib
    email parser to look for form data that daphne never uses (it hands the raw body to the
    ASGI application, and Django parses forms itself). Measured under daphne, that parser
    is about a seventh of the gateway's CPU per request. Returns False when Twisted is
    not installed or no longer has the switch (then nothing changed).
    """
    try:
        http = importlib.import_module("twisted.web.http")
    except ImportError:
        return False
    request = http.Request
    if "_parsePOSTFormSubmission" not in getattr(request, "__annotations__", {}):
        return False
    # Request.__init__ stores the flag per instance; a data descriptor on the class wins
    # over the instance attribute and ignores that store.
    request._parsePOSTFormSubmission = property(lambda _self: False, lambda _self, _value: None)
    return True


def skip_twisted_access_log() -> bool:
    """Stop Twisted formatting an access-log line for every request into its own log.

    ``HTTPFactory.log`` formats a combined-log line per finished request and writes it to
    Twisted's legacy log, which nothing in the web process reads: daphne keeps its own
    access log (``-v 1`` or ``--access-log``), unaffected by this. Returns False when
    Twisted is not installed.
    """
    try:
        http = importlib.import_module("twisted.web.http")
    except ImportError:
        return False
    http.HTTPFactory.log = _no_access_log
    return True


def _no_access_log(_factory: object, _request: object) -> None:
    return None


def tune_web_process() -> None:
    """Every tuning above; safe to call more than once."""
    skip_twisted_form_parsing()
    skip_twisted_access_log()
    quick_thread_handoff()
