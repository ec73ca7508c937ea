"""Dashboard pages (server-rendered) and the action endpoint behind login."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    JsonResponse,
    QueryDict,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.records import used_bytes
from dashboard import engine_logs, history, params
from dashboard.action_forms import perform
from dashboard.charts import chart_data
from llmux_site.core.engine_log import RUN_MARKER
from llmux_site.core.eviction_policy import ProcessAction, WeightsAction
from llmux_site.middleware import allow_inline_styles
from models_app.models import (
    ApiKey,
    AuditEntry,
    ModelDefinition,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
    SwapTrigger,
    ValidationRun,
)
from models_app.roles import can_act, role_of
from models_app.selectors import swap_history
from models_app.services import definition_actions as definitions
from models_app.services import playground_keys
from models_app.services.acting import Acting, ActionError
from models_app.services.engines import engine_log_path, eviction_policy
from models_app.services.registry import model_entry
from models_app.snapshot import error_end, status_snapshot

HISTORY_PAGE = 50
PHASE_LABELS = [
    ("backoff", "backoff"),
    ("cooldown", "cooldown"),
    ("drain", "drain"),
    ("evict", "evict"),
    ("bringup", "bring-up"),
    ("readiness", "readiness"),
]
NEW_KEY = "llmux_new_key"  # the session key a created key's plaintext waits under
CHART_HOURS = 24.0  # the charts' window when the page names none
CHART_WINDOWS = [(1, "1 hour"), (6, "6 hours"), (24, "24 hours"), (168, "7 days"), (720, "30 days")]
LOG_LINES = 200
KEY_DAYS_MAX = 36_500  # a key's lifetime: a century is "never" without overflowing a date


def _common(request: HttpRequest) -> dict[str, object]:
    return {
        "role": role_of(request.user),
        "can_act": can_act(request.user),
        "weights_choices": [w.value for w in WeightsAction],
        "process_choices": [p.value for p in ProcessAction],
    }


@login_required
@require_safe  # a page to read: GET and HEAD only
def overview(request: HttpRequest) -> HttpResponse:
    state = status_snapshot()
    return render(
        request,
        "dashboard/overview.html",
        {**_common(request), "snap": state, "snap_json": state, "phases": PHASE_LABELS},
    )


@login_required
@require_safe  # a page to read: GET and HEAD only
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(ModelDefinition.objects.select_related("runtime"), name=name)
    entry = model_entry(model)
    log_lines, log_offset = engine_logs.log_end(engine_log_path(model), LOG_LINES)
    runtime = getattr(model, "runtime", None)
    return render(
        request,
        "dashboard/model.html",
        {
            **_common(request),
            "model": model,
            "runtime": runtime,
            "last_error": error_end(runtime.last_error) if runtime else "",
            "own_policy": eviction_policy(model, RegistryConfig.current()),
            "definition": json.dumps(entry, indent=2, sort_keys=True),
            "swaps": SwapEvent.objects.filter(to_name=model.name)[:20],
            "images": CheckpointImage.objects.filter(model_name=model.name)[:20],
            "validations": ValidationRun.objects.filter(model_name=model.name)[:20],
            "log_lines": [(line, line.startswith(RUN_MARKER)) for line in log_lines],
            "log_offset": log_offset,
            "run_marker": RUN_MARKER,
        },
    )


def _bad_parameter_is_400(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A malformed parameter is the client's mistake: 400 with the parser's message."""

    @wraps(view)
    def checked(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except params.BadParameter as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")

    return checked


def _swap_form(request: HttpRequest) -> dict[str, Any]:
    """The filter form as the user filled it (shown again with an error too)."""
    return {
        "form": {name: request.GET.get(name, "") for name in history.SWAP_FILTERS},
        "models": ModelDefinition.objects.values_list("name", flat=True),
        "outcomes": SwapOutcome.choices,
        "triggers": SwapTrigger.choices,
    }


def _swap_page(request: HttpRequest) -> dict[str, Any]:
    """The page of the history the query asks for; BadParameter for a query that cannot
    apply (an unknown parameter, a malformed value, a page that does not exist)."""
    filters = history.swap_filters(request.GET)
    paginator = Paginator(swap_history(**filters), HISTORY_PAGE)
    page = paginator.page(history.page_number(request.GET, paginator.num_pages))
    query = request.GET.copy()
    query.pop("page", None)
    return {"page": page, "query": query.urlencode()}


@login_required
@require_safe  # a page to read: GET and HEAD only
def swaps(request: HttpRequest) -> HttpResponse:
    """The swap history; live on its first page (static/llmux/swaps.js)."""
    context = {**_common(request), **_swap_form(request)}
    try:
        context |= _swap_page(request)
    except params.BadParameter as exc:
        return render(request, "dashboard/swaps.html", {**context, "error": str(exc)}, status=400)
    return render(request, "dashboard/swaps.html", context)


@login_required
@require_safe  # a page to read: GET and HEAD only
@gzip_page  # fetched at each swap; no secret in it to guess at through its size (BREACH)
@_bad_parameter_is_400
def swaps_rows(request: HttpRequest) -> HttpResponse:
    """The history's count and table alone, for the page to fetch when a swap changed."""
    return render(request, "dashboard/_swaps_live.html", _swap_page(request))


@login_required
@require_safe  # a page to read: GET and HEAD only
def checkpoints(request: HttpRequest) -> HttpResponse:
    from django.conf import settings

    images = CheckpointImage.objects.exclude(status=ImageStatus.DELETED)
    totals = images.aggregate(n=Count("id"), restores=Sum("restored_count"))
    return render(
        request,
        "dashboard/checkpoints.html",
        {
            **_common(request),
            "images": images.order_by("-created_at")[:500],
            "used": used_bytes(),
            "budget": settings.LLMUX_IMAGES_BUDGET,
            "totals": totals,
        },
    )


@login_required
@require_safe  # a page to read: GET and HEAD only
def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit log (admins): who did what from where is not for every viewer."""
    if role_of(request.user) != "admin":
        return HttpResponseForbidden("only administrators read the audit log")
    page = Paginator(AuditEntry.objects.all(), HISTORY_PAGE).get_page(request.GET.get("page"))
    return render(request, "dashboard/audit.html", {**_common(request), "page": page})


@login_required
@require_safe  # a page to read: GET and HEAD only
@allow_inline_styles  # plotly.js styles its elements
def charts(request: HttpRequest) -> HttpResponse:
    """The charts; they fetch their data (charts_data) and again when a swap changed."""
    context = {**_common(request), "windows": CHART_WINDOWS, "hours": CHART_HOURS}
    try:
        hours = _chart_hours(request.GET)
    except params.BadParameter as exc:
        return render(request, "dashboard/charts.html", {**context, "error": str(exc)}, status=400)
    if hours not in dict(CHART_WINDOWS):  # a window the link named: offered as it is
        context["windows"] = sorted([*CHART_WINDOWS, (hours, f"{hours:g} hours")])
    return render(request, "dashboard/charts.html", {**context, "hours": hours})


@login_required
@require_safe  # a page to read: GET and HEAD only
@gzip_page  # a week of swaps is about 1 MB of JSON, a tenth of it gzipped; no secret in it
def charts_data(request: HttpRequest) -> HttpResponse:
    try:
        hours = _chart_hours(request.GET)
    except params.BadParameter as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(chart_data(hours))


def _chart_hours(query: QueryDict) -> float:
    params.known(query, ("hours",))
    return params.number("hours", query.get("hours", str(CHART_HOURS)), low=0.1, high=24 * 30)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    """Gateway API keys (admins): the list, a form, and a new key shown this once."""
    if role_of(request.user) != "admin":
        return HttpResponseForbidden("only administrators manage API keys")
    status = 200
    if request.method == "POST":
        try:
            created = _key_action(request)
        except (params.BadParameter, ActionError) as exc:
            messages.error(request, str(exc))
            status = 400
        else:
            # Post, then redirect: a reload of the page does not create the key again.
            # The plaintext waits in the session for the one page that shows it.
            if created is not None:
                request.session[NEW_KEY] = created
            return redirect("keys")
    return render(
        request,
        "dashboard/keys.html",
        {
            **_common(request),
            "keys": ApiKey.objects.all(),
            "created": request.session.pop(NEW_KEY, None),
            "form": request.POST if status == 400 else {},
        },
        status=status,
    )


def _acting(request: HttpRequest) -> Acting:
    return Acting(request.user, SwapTrigger.DASHBOARD, request.META.get("REMOTE_ADDR", ""))


def _key_action(request: HttpRequest) -> str | None:
    form = request.POST
    if "revoke" in form:
        key = ApiKey.objects.filter(pk=params.whole("revoke", form["revoke"])).first()
        if key is None:
            raise params.BadParameter("revoke: no such key")
        definitions.do_revoke_key(key, acting=_acting(request))
        messages.success(request, f"key {key.name} revoked")
        return None
    name = params.text("name", form.get("name", ""), max_length=128)
    if not name:
        raise params.BadParameter("name: required")
    scopes = [params.text("scopes", s, max_length=128) for s in form.get("scopes", "").split(",")]
    rpm = params.whole("rpm", form["rpm"]) if form.get("rpm") else None
    days = (
        params.number("days", form["days"], low=0.01, high=KEY_DAYS_MAX)
        if form.get("days")
        else None
    )
    expires = timezone.now() + timedelta(days=days) if days else None
    made = definitions.do_create_key(
        name,
        scopes=[s for s in scopes if s],
        rpm_limit=rpm,
        expires_at=expires,
        acting=_acting(request),
    )
    return made.plaintext


@login_required
@require_safe  # a file to read: GET and HEAD only
def engine_log(request: HttpRequest, name: str) -> HttpResponseBase:
    """The model's whole engine log, as a download (anyone who may read the model page)."""
    model = get_object_or_404(ModelDefinition, name=name)
    path = engine_log_path(model)
    try:
        log = open(path, "rb")  # noqa: SIM115 (FileResponse closes it)
    except FileNotFoundError:
        raise Http404(f"{model.name} has no engine log yet") from None
    return FileResponse(
        log, as_attachment=True, filename=path.name, content_type="text/plain; charset=utf-8"
    )


@login_required
@require_safe  # a page to read: GET and HEAD only
def playground(request: HttpRequest) -> HttpResponse:
    names = ModelDefinition.objects.filter(enabled=True).values_list("name", flat=True)
    return render(request, "dashboard/playground.html", {**_common(request), "models": names})


@login_required
@require_POST
def act(request: HttpRequest, name: str) -> HttpResponse:
    """Carry out one action (viewers are refused here, whatever the page showed).

    A page that asks for JSON (dashboard.js, no reload) gets the outcome as JSON, with the
    queued operation's id to follow over the socket; a plain form post is redirected back
    with the outcome as a message.
    """
    wants_json = request.accepts("application/json") and not request.accepts("text/html")
    try:
        outcome = perform(name, request.POST, _acting(request))
    except PermissionError as exc:
        if wants_json:
            return JsonResponse({"message": str(exc), "result": "refused"}, status=403)
        return HttpResponseForbidden(str(exc))
    except ActionError as exc:
        if wants_json:
            return JsonResponse({"message": str(exc), "result": "failed"}, status=400)
        messages.error(request, str(exc))
    else:
        if wants_json:
            return JsonResponse(
                {
                    "message": outcome.message,
                    "result": outcome.result,
                    "operation": outcome.operation,
                }
            )
        messages.success(request, outcome.message)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = "/"
    return redirect(back or "/")


@login_required
@require_POST
@never_cache  # a credential: no cache keeps a copy
def playground_key(request: HttpRequest) -> HttpResponse:
    """A short-lived gateway key for this user's playground. Only a session with its CSRF
    token gets one: not a gateway key (so a key cannot mint more), not another site."""
    try:
        minted = playground_keys.do_mint_playground_key(acting=_acting(request))
    except PermissionError as exc:
        return JsonResponse({"error": str(exc)}, status=403)
    except playground_keys.TooManyKeys as exc:
        return JsonResponse({"error": str(exc)}, status=429)
    except ActionError as exc:  # NothingToUse
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse(
        {
            "key": minted.plaintext,
            "expires_at": minted.expires_at.isoformat(),
            "expires_in": playground_keys.KEY_TTL.total_seconds(),
            "models": minted.models,
        }
    )
