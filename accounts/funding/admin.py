"""Admin for funding rows: read-only (money moves only through the services)."""

from django.contrib import admin

from accounts.funding.models import (
    ConnectedAccount,
    Deposit,
    ReconciliationReport,
    StripeEvent,
    Withdrawal,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Deposit)
class DepositAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "currency", "amount", "status", "reversed_amount", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["user__email", "stripe_session_id", "stripe_payment_intent"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "stripe_id", "type", "status", "attempts", "received_at"]
    list_filter = ["status", "type"]
    search_fields = ["stripe_id", "payment_intent"]


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "stripe_account_id", "details_submitted", "payouts_enabled"]
    search_fields = ["user__email", "stripe_account_id"]


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "currency", "amount", "status", "attempts", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["user__email", "stripe_transfer_id"]


@admin.register(ReconciliationReport)
class ReconciliationReportAdmin(ReadOnlyAdmin):
    list_display = ["id", "since", "until", "matched", "created_at"]
