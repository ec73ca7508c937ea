"""Management API views: thin, over the same actions the dashboard uses.

Each write is one action of models_app.services (operator_actions, definition_actions),
which validates, writes and audits it; a view parses, resolves the URL's object (404) and
answers (api.answers maps the action's errors). Lifecycle actions answer 202 with the
queued operation to follow, or 409 while another operation runs on the model's GPU group.
The checkpoint images' endpoints are checkpoints_app.api's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

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

from llmux_site.core.eviction_policy import EvictionPolicy, PolicyError
from models_app import selectors
from models_app.api import serializers as s
from models_app.api.answers import accepted, acting, answer, invalid_definition
from models_app.api.permissions import PERMISSIONS, AdminOnly
from models_app.api.refusals import AuditedRefusal
from models_app.models import (
    ApiKey,
    AuditEntry,
    ModelDefinition,
    Node,
    SwitchRequest,
    ValidationRun,
)
from models_app.services import definition_actions as definitions
from models_app.services import operator_actions as actions
from models_app.services.acting import Outcome
from models_app.services.api_keys import NewKey
from models_app.services.registry import model_entry
from models_app.snapshot import api_status


def _model(name: str) -> ModelDefinition:
    return get_object_or_404(ModelDefinition, name=name)


class ModelOut(TypedDict):
    """A model as `/api/models/` shows it (s.ModelOutSerializer documents it)."""

    name: str
    definition: dict[str, Any]
    state: str


def _out(model: ModelDefinition) -> ModelOut:
    return {
        "name": model.name,
        "definition": model_entry(model),
        "state": selectors.engine_state(model),
    }


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([AllowAny])
def not_found(request: Request) -> Response:
    return Response({"detail": f"no API endpoint at {request.path}"}, status.HTTP_404_NOT_FOUND)


class ModelList(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ModelOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        models = ModelDefinition.objects.prefetch_related("aliases").order_by("name")
        return Response([_out(m) for m in models])

    @extend_schema(request=s.ModelEntrySerializer, responses={201: s.ModelOutSerializer})
    def post(self, request: Request) -> Response:
        body = s.ModelEntrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        name, definition = body.validated_data["name"], body.validated_data["definition"]
        return answer(
            lambda: definitions.do_create_model(name, definition, acting=acting(request)),
            lambda _: Response(_out(_model(name)), status=status.HTTP_201_CREATED),
        )


class ModelDetail(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ModelOutSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(_out(_model(name)))

    @extend_schema(request=s.ModelPatchSerializer, responses=s.ModelOutSerializer)
    def put(self, request: Request, name: str) -> Response:
        return self._change(request, name, merge=False)

    @extend_schema(request=s.ModelPatchSerializer, responses=s.ModelOutSerializer)
    def patch(self, request: Request, name: str) -> Response:
        return self._change(request, name, merge=True)

    def _change(self, request: Request, name: str, *, merge: bool) -> Response:
        _model(name)
        body = s.ModelPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        definition = body.validated_data["definition"]
        return answer(
            lambda: definitions.do_edit_model(
                name, definition, merge=merge, acting=acting(request)
            ),
            lambda _: Response(_out(_model(name))),
        )

    @extend_schema(responses={204: None})
    def delete(self, request: Request, name: str) -> Response:
        _model(name)
        try:
            definitions.do_delete_model(name, acting=acting(request))
        except PermissionError as exc:
            raise AuditedRefusal(str(exc)) from None
        except definitions.InvalidDefinition as exc:  # a running engine or an image refuses
            # The answer's detail is the refusal as a 400 would have carried it.
            return Response(
                {"detail": str(invalid_definition(exc).detail)}, status=status.HTTP_409_CONFLICT
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


class Status(APIView):
    """llmux's /control/status: mode, active models, per model state and queues."""

    permission_classes = PERMISSIONS

    @extend_schema(responses=s.StatusSerializer)
    def get(self, request: Request) -> Response:
        return Response(api_status())


# Lifecycle actions by URL name, with the body each takes (None: none).
LIFECYCLE: dict[str, tuple[Callable[..., Outcome], type[s.StrictSerializer] | None]] = {
    "switch": (actions.do_switch, None),
    "wake": (actions.do_wake, None),
    "stop": (actions.do_stop, None),
    "restore": (actions.do_restore, None),
    "pin": (actions.do_pin, None),
    "evict": (actions.do_evict, s.EvictSerializer),
    "checkpoint": (actions.do_checkpoint, s.CheckpointSerializer),
}


class ModelAction(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(
        request=s.EvictSerializer,
        responses={202: s.AcceptedSerializer},
        parameters=[OpenApiParameter("action", str, OpenApiParameter.PATH, enum=sorted(LIFECYCLE))],
        description="switch, evict (body: weights, process), wake, stop, checkpoint "
        "(body: optional weights), restore, pin. 202 with the operation to follow.",
    )
    def post(self, request: Request, name: str, action: str) -> Response:
        if action not in LIFECYCLE:
            raise NotFound(f"unknown action {action!r}")
        do, body_class = LIFECYCLE[action]
        options: dict[str, Any] = {}
        if body_class is not None:
            body = body_class(data=request.data or {})
            body.is_valid(raise_exception=True)
            options.update(body.validated_data)
        elif request.data:
            raise ValidationError({"detail": f"{action} takes no body"})
        _model(name)
        return answer(
            lambda: do(name, acting=acting(request), wait_for_group=False, **options),
            lambda outcome: accepted(request, outcome),
        )


class Mode(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(request=s.ModeSerializer, responses=s.AcceptedSerializer)
    def post(self, request: Request) -> Response:
        body = s.ModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        mode = body.validated_data["mode"]
        return answer(
            lambda: actions.do_set_mode(mode, acting=acting(request)),
            lambda outcome: accepted(request, outcome),
        )


class Unpin(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(request=None, responses=s.AcceptedSerializer)
    def post(self, request: Request) -> Response:
        return answer(
            lambda: actions.do_unpin(acting=acting(request)),
            lambda outcome: accepted(request, outcome),
        )


class Override(APIView):
    """The runtime eviction override of a model (cleared with nulls)."""

    permission_classes = PERMISSIONS

    @extend_schema(request=s.OverrideSerializer, responses=s.MessageSerializer)
    def put(self, request: Request, name: str) -> Response:
        _model(name)
        body = s.OverrideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        weights, process = body.validated_data.get("weights"), body.validated_data.get("process")
        if (weights is None) != (process is None):
            raise ValidationError({"detail": "give both weights and process, or neither"})
        try:
            policy = EvictionPolicy.parse(weights, process) if weights else None
        except PolicyError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return answer(
            lambda: definitions.do_set_override(name, policy, acting=acting(request)),
            lambda outcome: Response({"message": outcome.message}),
        )


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
        return answer(
            lambda: definitions.do_create_key(
                data["name"],
                scopes=data.get("scopes") or [],
                rpm_limit=data.get("rpm_limit"),
                expires_at=data.get("expires_at"),
                acting=acting(request),
            ),
            _key_created,
        )


def _key_created(created: NewKey) -> Response:
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
        return answer(
            lambda: definitions.do_revoke_key(key, acting=acting(request)),
            lambda _: Response(status=status.HTTP_204_NO_CONTENT),
        )


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: for loopback scrapers, or any logged-in user or token."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from llmux_site.core.addresses import is_loopback_host
    from models_app import metrics_exposition
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
    return HttpResponse(metrics_exposition.exposition(), content_type=CONTENT_TYPE_LATEST)
