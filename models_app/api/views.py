"""Management API views: thin, over the same services the dashboard uses.

Writes are audited (dashboard.actions.perform for operator actions; here for definitions).
Lifecycle actions answer 202 with the queued operation to follow, or 409 while another
operation runs on the model's GPU group.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from checkpoints_app.models import CheckpointImage, ImageStatus
from dashboard import actions
from dashboard.snapshot import snapshot
from llmux_site.core.config import ConfigError, config_document, parse_config
from llmux_site.core.policy import EvictionPolicy, PolicyError
from models_app import selectors
from models_app.api import serializers as s
from models_app.api.permissions import AdminOnly, RolePermission
from models_app.api.refusals import AuditedRefusal
from models_app.models import (
    ApiKey,
    AuditEntry,
    AuditResult,
    EngineState,
    ModelDefinition,
    Node,
    SwitchRequest,
    SwitchStatus,
    ValidationRun,
)
from models_app.roles import role_of
from models_app.services import api_keys, audit, control
from models_app.services.registry import apply_registry, export_registry
from models_app.services.runtime import runtime_for
from models_app.services.switching import group_of

PERMISSIONS = [IsAuthenticated, RolePermission]
LIFECYCLE = {"switch", "evict", "wake", "stop", "checkpoint", "restore", "pin"}


def _remote(request: Request) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def _model(name: str) -> ModelDefinition:
    return get_object_or_404(ModelDefinition, name=name)


def _entry(name: str) -> dict[str, Any]:
    return dict(config_document(export_registry())["models"].get(name, {}))


def _out(model: ModelDefinition) -> dict[str, Any]:
    return {"name": model.name, "definition": _entry(model.name), "state": runtime_for(model).state}


def _apply(request: Request, action: str, name: str, change: Any) -> None:
    """Change the registry document and apply it like an import; audited either way."""
    document = config_document(export_registry())
    prune = change(document["models"])
    try:
        with transaction.atomic():
            restricted = role_of(request.user) != "admin"
            apply_registry(parse_config(document), prune=prune, restricted=restricted)
    except ConfigError as exc:
        audit.record(
            request.user,
            action,
            name,
            result=AuditResult.FAILED,
            detail=str(exc),
            source="api",
            remote_addr=_remote(request),
        )
        raise ValidationError({"definition": [str(e) for e in exc.errors] or [str(exc)]}) from None
    audit.record(request.user, action, name, source="api", remote_addr=_remote(request))


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([AllowAny])
def not_found(request: Request) -> Response:
    return Response({"detail": f"no API endpoint at {request.path}"}, status.HTTP_404_NOT_FOUND)


class ModelList(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ModelOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response([_out(m) for m in ModelDefinition.objects.order_by("name")])

    @extend_schema(request=s.ModelEntrySerializer, responses={201: s.ModelOutSerializer})
    def post(self, request: Request) -> Response:
        body = s.ModelEntrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        name = body.validated_data["name"]
        if ModelDefinition.objects.filter(name=name).exists():
            return Response({"detail": f"a model named {name!r} exists"}, status.HTTP_409_CONFLICT)

        def add(models: dict[str, Any]) -> bool:
            models[name] = body.validated_data["definition"]
            return False

        _apply(request, "create_model", name, add)
        return Response(_out(_model(name)), status=status.HTTP_201_CREATED)


class ModelDetail(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ModelOutSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(_out(_model(name)))

    @extend_schema(request=s.ModelPatchSerializer, responses=s.ModelOutSerializer)
    def put(self, request: Request, name: str) -> Response:
        return self._change(request, name, replace=True)

    @extend_schema(request=s.ModelPatchSerializer, responses=s.ModelOutSerializer)
    def patch(self, request: Request, name: str) -> Response:
        return self._change(request, name, replace=False)

    def _change(self, request: Request, name: str, *, replace: bool) -> Response:
        _model(name)
        body = s.ModelPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)

        def edit(models: dict[str, Any]) -> bool:
            new = body.validated_data["definition"]
            models[name] = new if replace else {**models.get(name, {}), **new}
            return False

        _apply(request, "edit", name, edit)
        return Response(_out(_model(name)))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, name: str) -> Response:
        _model(name)

        def remove(models: dict[str, Any]) -> bool:
            models.pop(name, None)
            return True

        try:
            _apply(request, "delete_model", name, remove)
        except ValidationError as exc:  # a running engine or an image refuses the prune
            return Response({"detail": str(exc.detail)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class Status(APIView):
    """llmux's /control/status: mode, active models, per model state and queues."""

    permission_classes = PERMISSIONS

    @extend_schema(responses=s.StatusSerializer)
    def get(self, request: Request) -> Response:
        state = snapshot()
        state["active"] = [m["name"] for m in state["models"] if m["state"] == EngineState.RUNNING]
        return Response(state)


def _accepted(request: Request, outcome: actions.Outcome) -> Response:
    url = (
        request.build_absolute_uri(f"/api/operations/{outcome.operation}/")
        if outcome.operation
        else None
    )
    code = status.HTTP_202_ACCEPTED if outcome.operation else status.HTTP_200_OK
    return Response(
        {"message": outcome.message, "operation": outcome.operation, "url": url}, status=code
    )


def _perform(request: Request, name: str, data: dict[str, Any]) -> Response:
    if name in LIFECYCLE and "model" in data:
        model = _model(str(data["model"]))
        running = (
            SwitchRequest.objects.filter(group=group_of(model), status=SwitchStatus.RUNNING)
            .exclude(target=model)
            .first()
        )
        if running is not None:
            return Response(
                {"detail": f"operation {running.pk} is running on GPU group {running.group}"},
                status=status.HTTP_409_CONFLICT,
            )
    try:
        outcome = actions.perform(request.user, name, data, _remote(request), source="api")
    except PermissionError as exc:
        raise AuditedRefusal(str(exc)) from None
    except actions.StateError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    except actions.ActionError as exc:
        raise ValidationError({"detail": str(exc)}) from None
    return _accepted(request, outcome)


ACTION_BODIES: dict[str, type[s.StrictSerializer] | None] = {
    "switch": None,
    "wake": None,
    "stop": None,
    "restore": None,
    "pin": None,
    "evict": s.EvictSerializer,
    "checkpoint": s.CheckpointSerializer,
}


class ModelAction(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(
        request=s.EvictSerializer,
        responses={202: s.AcceptedSerializer},
        parameters=[
            OpenApiParameter("action", str, OpenApiParameter.PATH, enum=sorted(ACTION_BODIES))
        ],
        description="switch, evict (body: weights, process), wake, stop, checkpoint "
        "(body: optional weights), restore, pin. 202 with the operation to follow.",
    )
    def post(self, request: Request, name: str, action: str) -> Response:
        if action not in ACTION_BODIES:
            raise NotFound(f"unknown action {action!r}")
        data: dict[str, Any] = {"model": name}
        body_class = ACTION_BODIES[action]
        if body_class is not None:
            body = body_class(data=request.data or {})
            body.is_valid(raise_exception=True)
            data.update(body.validated_data)
        elif request.data:
            raise ValidationError({"detail": f"{action} takes no body"})
        return _perform(request, action, data)


class Mode(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(request=s.ModeSerializer, responses=s.AcceptedSerializer)
    def post(self, request: Request) -> Response:
        body = s.ModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _perform(request, "mode", dict(body.validated_data))


class Unpin(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(request=None, responses=s.AcceptedSerializer)
    def post(self, request: Request) -> Response:
        return _perform(request, "unpin", {})


class Override(APIView):
    """The runtime eviction override of a model (cleared with nulls)."""

    permission_classes = PERMISSIONS

    @extend_schema(request=s.OverrideSerializer, responses=s.MessageSerializer)
    def put(self, request: Request, name: str) -> Response:
        model = _model(name)
        body = s.OverrideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        weights, process = body.validated_data.get("weights"), body.validated_data.get("process")
        if (weights is None) != (process is None):
            raise ValidationError({"detail": "give both weights and process, or neither"})
        try:
            policy = EvictionPolicy.parse(weights, process) if weights else None
        except PolicyError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        control.set_eviction_override(model, policy)
        label = policy.label if policy else "cleared"
        audit.record(
            request.user, "override", name, detail=label, source="api", remote_addr=_remote(request)
        )
        return Response({"message": f"eviction override of {name}: {label}"})


class OperationDetail(RetrieveAPIView):  # type: ignore[type-arg]
    permission_classes = PERMISSIONS
    serializer_class = s.OperationSerializer
    queryset = SwitchRequest.objects.select_related("target")


class SwapList(ListAPIView):  # type: ignore[type-arg]
    permission_classes = PERMISSIONS
    serializer_class = s.SwapSerializer

    @extend_schema(parameters=[s.SwapFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        filters = s.SwapFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.swap_history(**filters.validated_data)


class ImageList(ListAPIView):  # type: ignore[type-arg]
    permission_classes = PERMISSIONS
    serializer_class = s.ImageSerializer
    queryset = CheckpointImage.objects.exclude(status=ImageStatus.DELETED).order_by("-id")


class ImageDetail(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ImageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.ImageSerializer(get_object_or_404(CheckpointImage, pk=pk)).data)

    @extend_schema(responses={200: s.AcceptedSerializer})
    def delete(self, request: Request, pk: int) -> Response:
        get_object_or_404(CheckpointImage, pk=pk)
        return _perform(request, "delete_image", {"image": str(pk)})


class ImageRestore(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(request=None, responses={202: s.AcceptedSerializer})
    def post(self, request: Request, pk: int) -> Response:
        image = get_object_or_404(CheckpointImage, pk=pk)
        if image.status != ImageStatus.READY or image.model is None:
            return Response(
                {"detail": f"image {pk} is {image.status}: not restorable"},
                status=status.HTTP_409_CONFLICT,
            )
        return _perform(request, "restore", {"model": image.model.name})


class NodeList(ListAPIView):  # type: ignore[type-arg]
    """Hosts and their GPUs (single-host installs have one)."""

    permission_classes = PERMISSIONS
    serializer_class = s.NodeSerializer
    queryset = Node.objects.order_by("name")


class ValidationList(ListAPIView):  # type: ignore[type-arg]
    """Results of `llmux_validate`, newest first (`model` filter)."""

    permission_classes = PERMISSIONS
    serializer_class = s.ValidationSerializer

    @extend_schema(parameters=[s.ValidationFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        filters = s.ValidationFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        rows = ValidationRun.objects.order_by("-created_at", "-id")
        model = filters.validated_data.get("model")
        return rows.filter(model_name=model) if model else rows


class AuditList(ListAPIView):  # type: ignore[type-arg]
    permission_classes = [IsAuthenticated, AdminOnly]
    serializer_class = s.AuditSerializer
    queryset = AuditEntry.objects.order_by("-created_at", "-id")


class KeyList(APIView):
    """Gateway API keys (admins): list, and create (the key is in the answer, once)."""

    permission_classes = [IsAuthenticated, AdminOnly]

    @extend_schema(responses=s.KeySerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(s.KeySerializer(ApiKey.objects.all(), many=True).data)

    @extend_schema(request=s.KeyCreateSerializer, responses={201: s.KeyCreatedSerializer})
    def post(self, request: Request) -> Response:
        body = s.KeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        created = api_keys.create_key(
            data["name"],
            scopes=data.get("scopes") or [],
            rpm_limit=data.get("rpm_limit"),
            expires_at=data.get("expires_at"),
            created_by=request.user,
        )
        audit.record(
            request.user,
            "create_key",
            f"{created.key.name} ({created.key.prefix})",
            source="api",
            remote_addr=_remote(request),
        )
        answer = dict(s.KeySerializer(created.key).data)
        answer["key"] = created.plaintext
        return Response(answer, status=status.HTTP_201_CREATED)


class KeyDetail(APIView):
    permission_classes = [IsAuthenticated, AdminOnly]

    @extend_schema(responses=s.KeySerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.KeySerializer(get_object_or_404(ApiKey, pk=pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        key = get_object_or_404(ApiKey, pk=pk)
        api_keys.revoke_key(key)
        audit.record(
            request.user,
            "revoke_key",
            f"{key.name} ({key.prefix})",
            source="api",
            remote_addr=_remote(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: for loopback scrapers, or any logged-in user or token."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from llmux_site.core.addresses import is_loopback_host
    from models_app import metrics
    from models_app.api.authentication import HashedTokenAuthentication

    allowed = is_loopback_host(request.META.get("REMOTE_ADDR", "")) or (
        request.user.is_authenticated
    )
    if not allowed:
        try:
            allowed = HashedTokenAuthentication().authenticate(Request(request)) is not None
        except Exception:
            allowed = False
    if not allowed:
        return HttpResponse(
            "metrics need a login or a token\n", status=401, content_type="text/plain"
        )
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
