"""Request and response middleware of the Django pages, the API and the admin."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

API_PREFIX = "/api/"


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
