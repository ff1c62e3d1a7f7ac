"""Read-only views of the ledger: corrections are new transactions (``ledger_adjust``)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from exchange.ledger.models import Account, Asset, LedgerTransaction, Posting


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PostingInline(admin.TabularInline):
    model = Posting
    fields = ["account", "asset", "bucket", "amount"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Asset)
class AssetAdmin(ReadOnlyAdmin):
    list_display = ["code", "kind", "decimals", "market"]
    list_filter = ["kind"]


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "system", "asset", "available", "held"]
    list_filter = ["system", "asset"]
    search_fields = ["owner__email", "asset__code"]
    list_select_related = ["owner"]


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "reference", "created_at", "staff_user"]
    list_filter = ["kind"]
    search_fields = ["reference", "idempotency_key"]
    inlines = [PostingInline]
    date_hierarchy = "created_at"


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdmin):
    list_display = ["id", "transaction", "account", "asset", "bucket", "amount"]
    list_filter = ["asset", "bucket", "transaction__kind"]
    search_fields = ["account__owner__email", "transaction__reference"]
    list_select_related = ["transaction", "account"]
