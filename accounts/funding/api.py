"""Funding API: ``/api/v1/deposits``, ``/api/v1/withdrawals``, ``/api/v1/payout-account``.

Amounts are decimal strings in currency units (whole minor units: "12.34"). Without Stripe
keys every write answers 503 ``funding_disabled``.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import actor_from_request, audit_withdrawal
from accounts.authentication import HasScope
from accounts.funding import services
from accounts.funding.models import Deposit, Withdrawal
from accounts.funding.selectors import connected_account_get, deposit_list, withdrawal_list
from exchange.api_inputs import StrictSerializer
from exchange.api_schema import error_response
from exchange.ledger.units import amount_display
from exchange.markets.currencies import currency_choices
from exchange.paging import HistoryCursor, TimeField


def _created_or_replayed(row: object) -> int:
    return status.HTTP_200_OK if getattr(row, "replayed", False) else status.HTTP_201_CREATED


class FundingRequestSerializer(StrictSerializer):
    currency = serializers.ChoiceField(choices=currency_choices())
    amount = serializers.RegexField(r"^\d{1,12}(\.\d{1,2})?$", help_text='e.g. "100.50"')
    client_request_id = serializers.CharField(
        required=False,
        allow_null=True,
        min_length=1,
        max_length=64,
        help_text="Your own key: re-sending it returns the first request (200), never a second.",
    )


class DepositSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    currency = serializers.CharField()
    amount = serializers.SerializerMethodField()
    checkout_url = serializers.CharField()
    ledger_transaction = serializers.IntegerField(source="credit_transaction_id", allow_null=True)
    refunded = serializers.SerializerMethodField()
    reversed = serializers.SerializerMethodField()
    failure_reason = serializers.CharField()
    created_at = TimeField()
    credited_at = TimeField(allow_null=True)

    def get_amount(self, deposit: Deposit) -> str:
        return amount_display(deposit.currency, deposit.amount)

    def get_refunded(self, deposit: Deposit) -> str:
        return amount_display(deposit.currency, deposit.reversal_due)

    def get_reversed(self, deposit: Deposit) -> str:
        return amount_display(deposit.currency, deposit.reversed_amount)


class WithdrawalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    currency = serializers.CharField()
    amount = serializers.SerializerMethodField()
    hold_transaction = serializers.IntegerField(source="hold_transaction_id", allow_null=True)
    ledger_transaction = serializers.IntegerField(source="final_transaction_id", allow_null=True)
    stripe_transfer = serializers.CharField(source="stripe_transfer_id", allow_null=True)
    failure_reason = serializers.CharField()
    created_at = TimeField()
    finished_at = TimeField(allow_null=True)

    def get_amount(self, withdrawal: Withdrawal) -> str:
        return amount_display(withdrawal.currency, withdrawal.amount)


REPLAYED = "A replay of its client_request_id: the first request, nothing new."
FUNDING_ERRORS = {
    502: error_response("`payment_provider_error`: Stripe refused or could not be reached."),
    503: error_response("`funding_disabled`: Stripe is not configured on this exchange."),
}


class _ListCreate(APIView):
    permission_classes = [HasScope]
    pagination_class = HistoryCursor  # what GET pages with (the document reads it)
    serializer_class: Any = None

    def _page(self, request: Request, rows: Any) -> Response:
        paginator = HistoryCursor()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(self.serializer_class(page, many=True).data)


class DepositListApi(_ListCreate):
    required_scopes = {"GET": "read", "POST": "trade"}
    serializer_class = DepositSerializer

    @extend_schema(responses=DepositSerializer(many=True))
    def get(self, request: Request) -> Response:
        return self._page(request, deposit_list(user=request.user))

    @extend_schema(
        request=FundingRequestSerializer,
        responses={
            201: DepositSerializer,
            200: OpenApiResponse(DepositSerializer, description=REPLAYED),
            **FUNDING_ERRORS,
        },
        description="Start a deposit: returns the Stripe Checkout URL to pay at (`checkout_url`).",
    )
    def post(self, request: Request) -> Response:
        services.funding_require_enabled()
        data = FundingRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        page = request.build_absolute_uri(reverse("funding:deposits"))
        deposit = services.deposit_create(
            user=request.user,
            currency=data.validated_data["currency"],
            amount=data.validated_data["amount"],
            success_url=page,
            cancel_url=page,
            client_request_id=data.validated_data.get("client_request_id"),
        )
        code = (
            status.HTTP_200_OK if getattr(deposit, "replayed", False) else status.HTTP_201_CREATED
        )
        return Response(DepositSerializer(deposit).data, status=code)


class WithdrawalListApi(_ListCreate):
    required_scopes = {"GET": "read", "POST": "withdraw"}
    serializer_class = WithdrawalSerializer

    @extend_schema(responses=WithdrawalSerializer(many=True))
    def get(self, request: Request) -> Response:
        return self._page(request, withdrawal_list(user=request.user))

    @extend_schema(
        request=FundingRequestSerializer,
        responses={
            201: WithdrawalSerializer,
            200: OpenApiResponse(WithdrawalSerializer, description=REPLAYED),
            **FUNDING_ERRORS,
            409: error_response(
                "`payout_account_not_ready` (no connected account that can receive transfers) "
                "or `idempotency_conflict` (client_request_id used with another body)."
            ),
            422: error_response("`insufficient_funds` or `withdrawal_limit_exceeded`."),
        },
        description="Withdraw available currency to your connected Stripe account (held now, "
        "transferred by a background job).",
    )
    def post(self, request: Request) -> Response:
        services.funding_require_enabled()
        data = FundingRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawal = services.withdrawal_request(
            user=request.user,
            currency=data.validated_data["currency"],
            amount=data.validated_data["amount"],
            client_request_id=data.validated_data.get("client_request_id"),
        )
        replayed = getattr(withdrawal, "replayed", False)
        code = status.HTTP_200_OK if replayed else status.HTTP_201_CREATED
        audit_withdrawal(withdrawal, actor=actor_from_request(request), replayed=replayed)
        withdrawal.refresh_from_db()
        return Response(WithdrawalSerializer(withdrawal).data, status=code)


class PayoutAccountSerializer(serializers.Serializer):
    connected = serializers.BooleanField()
    details_submitted = serializers.BooleanField(required=False, help_text="When connected.")
    payouts_enabled = serializers.BooleanField()


class OnboardingLinkSerializer(serializers.Serializer):
    onboarding_url = serializers.URLField(help_text="Stripe Express onboarding, valid briefly.")


class PayoutAccountApi(APIView):
    """The caller's connected Stripe account; POST returns a fresh Express onboarding link."""

    permission_classes = [HasScope]
    required_scopes = {"GET": "read", "POST": "withdraw"}

    @extend_schema(request=None, responses=PayoutAccountSerializer)
    def get(self, request: Request) -> Response:
        account = connected_account_get(user=request.user)
        if account is None:
            return Response({"connected": False, "payouts_enabled": False})
        return Response(
            {
                "connected": True,
                "details_submitted": account.details_submitted,
                "payouts_enabled": account.payouts_enabled,
            }
        )

    @extend_schema(
        request=None,
        responses={200: OnboardingLinkSerializer, **FUNDING_ERRORS},
    )
    def post(self, request: Request) -> Response:
        services.funding_require_enabled()
        return_url = request.build_absolute_uri(reverse("funding:connect_return"))
        url = services.connect_onboarding_link(
            user=request.user,
            refresh_url=request.build_absolute_uri(reverse("funding:connect")),
            return_url=return_url,
        )
        return Response({"onboarding_url": url})
