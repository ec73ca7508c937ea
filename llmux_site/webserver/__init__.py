"""The web process's HTTP server: daphne, with limits enforced before a body is read.

``python -m llmux_site.webserver [daphne's options] llmux_site.asgi:application`` runs
daphne with the channel of ``server.py``: a body larger than ``LLMUX_MAX_BODY_BYTES`` is
refused as soon as its length is known, and a client too slow with its headers or body
gets a 408 (``limits.py`` reads the settings). Daphne stays the server: Channels needs it.
"""
