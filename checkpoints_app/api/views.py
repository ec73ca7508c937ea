"""The checkpoint images through the management API: list, read, delete, restore.

Thin, like models_app.api's views: the deletion and the restore are the operator actions
of models_app.services.operator_actions, which validate, carry out and audit them.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from checkpoints_app.api.serializers import ImageSerializer
from checkpoints_app.models import CheckpointImage, ImageStatus
from models_app.api.answers import accepted, acting, answer
from models_app.api.permissions import PERMISSIONS
from models_app.api.serializers import AcceptedSerializer
from models_app.services import operator_actions as actions


class ImageList(ListAPIView):  # type: ignore[type-arg]
    permission_classes = PERMISSIONS
    serializer_class = ImageSerializer
    queryset = CheckpointImage.objects.exclude(status=ImageStatus.DELETED).order_by("-id")


class ImageDetail(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=ImageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ImageSerializer(get_object_or_404(CheckpointImage, pk=pk)).data)

    @extend_schema(responses={200: AcceptedSerializer})
    def delete(self, request: Request, pk: int) -> Response:
        get_object_or_404(CheckpointImage, pk=pk)
        return answer(
            lambda: actions.do_delete_image(str(pk), acting=acting(request)),
            lambda outcome: accepted(request, outcome),
        )


class ImageRestore(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(request=None, responses={202: AcceptedSerializer})
    def post(self, request: Request, pk: int) -> Response:
        image = get_object_or_404(CheckpointImage, pk=pk)
        if image.status != ImageStatus.READY or image.model is None:
            return Response(
                {"detail": f"image {pk} is {image.status}: not restorable"},
                status=status.HTTP_409_CONFLICT,
            )
        name = image.model.name
        return answer(
            lambda: actions.do_restore(name, acting=acting(request), wait_for_group=False),
            lambda outcome: accepted(request, outcome),
        )
