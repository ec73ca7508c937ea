"""``python -m llmux_site.webserver``: daphne's command line, with request limits."""

from llmux_site.webserver.server import main

main()
