"""ASGI entry point of the web process: pages, admin, API and static assets."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmux_site.settings")

django_app = get_asgi_application()

# Static assets are served from the finders directly (no collectstatic step), which keeps
# the embedded profile a single command; production deployments may put a CDN in front.
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

application = ASGIStaticFilesHandler(django_app)
