from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasScope, request_scopes
from accounts.models import SCOPE_CODES, ApiKey
from accounts.selectors import api_key_list
from accounts.services import LIMIT_FIELDS, api_key_create, api_key_revoke


class ApiKeySerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "status",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            *LIMIT_FIELDS,
            "allowed_models",
        ]


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=SCOPE_CODES), min_length=1)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    # limits of a ``consume`` key (the /v1 gateway); omitted or null: none
    tokens_per_day = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    tokens_per_month = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    requests_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    tokens_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=100
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The secret. Shown only this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class ApiKeyListApi(APIView):
    permission_classes = [HasScope]
    required_scope = "read"

    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ApiKeySerializer(api_key_list(user=request.user), many=True).data)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def post(self, request: Request) -> Response:
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        created = api_key_create(
            user=request.user,
            name=body.validated_data["name"],
            scopes=body.validated_data["scopes"],
            expires_at=body.validated_data.get("expires_at"),
            creator_scopes=request_scopes(request),
            limits={
                field: body.validated_data.get(field) for field in (*LIMIT_FIELDS, "allowed_models")
            },
        )
        data = ApiKeySerializer(created.api_key).data
        data["key"] = created.secret
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    permission_classes = [HasScope]
    required_scope = "read"

    @extend_schema(responses=ApiKeySerializer)
    def delete(self, request: Request, key_id: int) -> Response:
        api_key = api_key_revoke(user=request.user, key_id=key_id)
        return Response(ApiKeySerializer(api_key).data)
