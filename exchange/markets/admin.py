from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from exchange.markets.models import Market, MarketStatus


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ["symbol", "model_name", "token_kind", "region", "quote_currency", "status"]
    list_filter = ["status", "quote_currency", "token_kind", "region"]
    search_fields = ["symbol", "model_name", "base"]
    actions = ["halt", "resume", "cancel_only"]

    def get_readonly_fields(self, request: HttpRequest, obj: Market | None = None) -> list[str]:
        # Orders hold funds sized with these: they cannot change under a market with orders
        # (fee rates can: each order keeps the rates it was accepted with).
        if obj is not None and obj.orders.exists():
            return ["symbol", "base", "quote_currency", "tick_size", "lot_size"]
        return []

    @admin.action(description="Halt: refuse new orders, accept cancels")
    def halt(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_status(request, queryset, MarketStatus.HALTED)

    @admin.action(description="Resume trading")
    def resume(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_status(request, queryset, MarketStatus.OPEN)

    @admin.action(description="Cancel-only mode")
    def cancel_only(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_status(request, queryset, MarketStatus.CANCEL_ONLY)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Market], status: str) -> None:
        count = queryset.update(status=status)
        self.message_user(request, f"{count} market(s) now {status}.", messages.SUCCESS)
