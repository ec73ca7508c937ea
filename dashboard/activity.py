"""The requests view: finished and in-flight gateway requests, an operator's cancel, and
the admin's capture switch (behind login; the services audit and check roles)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from dashboard import params
from models_app import activity_selectors as reads
from models_app.models import ModelDefinition, SwapTrigger
from models_app.roles import can_act, role_of
from models_app.services import activity as activity_service
from models_app.services.acting import Acting, ActionError

DEFAULT_ROWS = 200
MAX_ROWS = 1000


def _acting(request: HttpRequest) -> Acting:
    return Acting(request.user, SwapTrigger.DASHBOARD, request.META.get("REMOTE_ADDR", ""))


def _filters(query: QueryDict) -> dict[str, Any]:
    return {
        "model": params.text("model", query.get("model", ""), max_length=128),
        "status": params.choice("status", query.get("status", ""), reads.STATUS_CLASSES),
        "who": params.text("who", query.get("who", ""), max_length=128),
        "since": params.when("since", query.get("since", "").strip()),
    }


def _bad(exc: params.BadParameter) -> HttpResponse:
    return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")


@login_required
@require_safe  # a page to read: GET and HEAD only
def requests_page(request: HttpRequest) -> HttpResponse:
    """The page; its script fills the tables from `requests_data` and keeps them live."""
    return render(
        request,
        "dashboard/requests.html",
        {
            "role": role_of(request.user),
            "can_act": can_act(request.user),
            "models": ModelDefinition.objects.values_list("name", flat=True),
            "statuses": reads.STATUS_CLASSES,
            "capture": reads.capture_state(),
        },
    )


@login_required
@require_safe  # a page to read: GET and HEAD only
def requests_data(request: HttpRequest) -> HttpResponse:
    """Finished requests (filtered, newest first) and every web process's in-flight ones."""
    try:
        filters = _filters(request.GET)
        rows = params.whole("rows", request.GET.get("rows", str(DEFAULT_ROWS)), high=MAX_ROWS)
    except params.BadParameter as exc:
        return _bad(exc)
    admin = role_of(request.user) == "admin"  # captured text is for administrators only
    return JsonResponse(
        {
            "finished": reads.recent_requests(rows, with_text=admin, **filters),
            "live": reads.live_requests(),
            "can_cancel": can_act(request.user),
            "capture": reads.capture_state()["capture"],
        }
    )


@login_required
@require_POST
def cancel_request(request: HttpRequest) -> HttpResponse:
    """An operator cancels a request in flight (viewers refused; audited either way)."""
    try:
        instance = params.text("instance", request.POST.get("instance", ""), max_length=64)
        request_id = params.text("request", request.POST.get("request", ""), max_length=32)
    except params.BadParameter as exc:
        return _bad(exc)
    try:
        outcome = activity_service.do_cancel_request(instance, request_id, acting=_acting(request))
    except PermissionError as exc:
        return JsonResponse({"ok": False, "message": str(exc)}, status=403)
    except ActionError as exc:
        return JsonResponse({"ok": False, "message": str(exc)}, status=409)
    return JsonResponse({"ok": True, "message": outcome.message})


@login_required
@require_POST
def capture(request: HttpRequest) -> HttpResponse:
    """An administrator turns the capture of prompt and answer text on or off."""
    try:
        wanted = params.choice("capture", request.POST.get("capture", ""), ["on", "off"])
    except params.BadParameter as exc:
        return _bad(exc)
    if not wanted:
        return _bad(params.BadParameter("capture: on or off"))
    try:
        outcome = activity_service.do_set_capture(wanted == "on", acting=_acting(request))
    except PermissionError as exc:
        return HttpResponse(str(exc), status=403, content_type="text/plain; charset=utf-8")
    messages.success(request, outcome.message)
    return redirect("requests")
