from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import actor_from_request, audit_list
from accounts.authentication import HasScope, request_scopes
from accounts.models import SCOPE_CODES, ApiKey, AuditEvent
from accounts.selectors import api_key_list
from accounts.services import LIMIT_FIELDS, api_key_create, api_key_revoke
from exchange.api_inputs import StrictSerializer
from exchange.paging import HistoryCursor, ModelSerializer, TimeField


class ApiKeySerializer(ModelSerializer):
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
            "created_by_key",
            *LIMIT_FIELDS,
            "allowed_models",
        ]


# What the columns hold (a bigger number was a 500): more than any key could use.
MAX_TOKENS_LIMIT = 10**15
MAX_REQUESTS_LIMIT = 2**31 - 1


class ApiKeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=80)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=SCOPE_CODES), min_length=1)
    expires_at = TimeField(required=False, allow_null=True)
    # limits of a ``consume`` key (the /v1 gateway); omitted or null: none
    tokens_per_day = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_TOKENS_LIMIT
    )
    tokens_per_month = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_TOKENS_LIMIT
    )
    requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_REQUESTS_LIMIT
    )
    tokens_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_TOKENS_LIMIT
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=100
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The secret. Shown only this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class ApiKeyListApi(APIView):
    """Managing keys needs a session or a key with the ``keys`` scope: a leaked read-only key
    must not mint keys or revoke the user's bots' keys."""

    permission_classes = [HasScope]
    required_scope = "keys"

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
            creator_key=request.auth if isinstance(request.auth, ApiKey) else None,
            limits={
                field: body.validated_data.get(field) for field in (*LIMIT_FIELDS, "allowed_models")
            },
            actor=actor_from_request(request),
        )
        data = ApiKeySerializer(created.api_key).data
        data["key"] = created.secret
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    permission_classes = [HasScope]
    required_scope = "keys"

    @extend_schema(
        responses={200: ApiKeySerializer},
        description="Revoke a key and the keys it created. With an API key, revoking a key "
        "that holds `trade` or `withdraw` needs those scopes too.",
    )
    def delete(self, request: Request, key_id: int) -> Response:
        api_key = api_key_revoke(
            user=request.user,
            key_id=key_id,
            revoker_scopes=request_scopes(request),
            actor=actor_from_request(request),
        )
        return Response(ApiKeySerializer(api_key).data)


class AuditEventSerializer(ModelSerializer):
    api_key_prefix = serializers.CharField(
        source="api_key.prefix",
        allow_null=True,
        default=None,
        read_only=True,
        help_text="The API key that acted; null: a browser session or an operator.",
    )
    details = serializers.DictField(
        read_only=True,
        help_text="What was acted on: for keys key_id, prefix, name, scopes (and with_parent "
        "when revoked with the key that created it); for withdrawals withdrawal_id, currency, "
        "amount.",
    )

    class Meta:
        model = AuditEvent
        fields = ["id", "action", "created_at", "api_key_prefix", "ip", "user_agent", "details"]


class AuditLogApi(APIView):
    """The caller's audit log, newest first: key creation and revocation, withdrawal
    requests, each with the IP address and user agent it came from."""

    permission_classes = [HasScope]
    required_scope = "read"
    pagination_class = HistoryCursor

    @extend_schema(
        responses=AuditEventSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        paginator = HistoryCursor()
        page = paginator.paginate_queryset(audit_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(AuditEventSerializer(page, many=True).data)
