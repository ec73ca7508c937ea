"""The ASGI side of Django's pages: static assets straight from the finders (compressed,
with cache headers: llmux_site.static_assets), then Django."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.exception import response_for_exception
from django.http import Http404, HttpRequest, HttpResponseBase

from llmux_site import static_assets


class StaticFiles(ASGIStaticFilesHandler):
    """Django's ASGI static handler, answering 404 for any path it will not serve.

    Django's own turns only Http404 into an answer: a path that climbs out of the static
    roots (`/static/../x`) raises SuspiciousFileOperation from the finders, and daphne
    logs "Exception inside application" and drops the request.
    """

    # Django's answers with a FileResponse; ours sends the bytes it keeps in memory.
    def serve(self, request: HttpRequest) -> HttpResponseBase:  # type: ignore[override]
        return static_assets.serve(request, self.file_path(request.path))

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return await super().get_response_async(request)
        except SuspiciousOperation:
            answer = sync_to_async(response_for_exception, thread_sensitive=False)
            return await answer(request, Http404("no such static file"))


def static_pages(django_app: Any) -> Any:
    """`django_app` behind the static files handler (no collectstatic step: the embedded
    profile stays a single command)."""
    return StaticFiles(django_app)
