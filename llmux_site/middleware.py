"""Request and response middleware of the Django pages, the API and the admin."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

API_PREFIX = "/api/"
INLINE_STYLES = "csp_inline_styles"  # a response attribute; see allow_inline_styles


class RefuseNulBytes:
    """A NUL in the path, the query or a form field is a 400 before any view runs.

    PostgreSQL refuses NUL in every string, so a lookup by such a name (a model in the
    path, a filter, a form field) raised a 500 there; refusing them in one place keeps
    every view from having to remember.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._has_nul(request):
            message = "NUL characters are not allowed in the path, query or form"
            if request.path.startswith(API_PREFIX):
                return JsonResponse({"detail": message}, status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

    @staticmethod
    def _has_nul(request: HttpRequest) -> bool:
        if "\x00" in request.path:
            return True
        # request.POST is empty (and reads nothing) unless the body is a form.
        forms = (request.GET, request.POST) if request.method == "POST" else (request.GET,)
        return any(
            "\x00" in key or any("\x00" in value for value in form.getlist(key))
            for form in forms
            for key in form
        )


class ContentSecurityPolicy:
    """A Content-Security-Policy on every Django answer (Django 5.2 has none built in).

    Scripts, styles, images and fonts only from this site, no inline script (the pages
    start theirs from `<body data-page>`; plotly.js is served from here), no plugins, no
    framing, forms and `<base>` only to this site. The live status websocket is this
    site's own host: named for ws:/wss: explicitly, as not every browser lets 'self'
    cover them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response.headers:
            inline_styles = getattr(response, INLINE_STYLES, False)
            response.headers["Content-Security-Policy"] = self.policy(request, inline_styles)
        return response

    @staticmethod
    def policy(request: HttpRequest, inline_styles: bool = False) -> str:
        try:
            host = request.get_host()
        except DisallowedHost:  # answered 400 by Django; the policy needs no socket then
            host = ""
        socket = f" {'wss' if request.is_secure() else 'ws'}://{host}" if host else ""
        return "; ".join(
            [
                "default-src 'self'",
                "script-src 'self'",
                "style-src 'self'" + (" 'unsafe-inline'" if inline_styles else ""),
                "img-src 'self' data:",
                "font-src 'self'",
                f"connect-src 'self'{socket}",
                "object-src 'none'",
                "base-uri 'self'",
                "form-action 'self'",
                "frame-ancestors 'none'",
            ]
        )


def allow_inline_styles(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For a page whose library sets style attributes or a <style> (plotly.js, Swagger
    UI): its policy adds 'unsafe-inline' to style-src only. Scripts stay 'self'; a style
    can restyle that page, not run code."""

    @wraps(view)
    def marked(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        setattr(response, INLINE_STYLES, True)
        return response

    return marked
