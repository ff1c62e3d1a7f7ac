from django.contrib import admin

from exchange.markets.models import Market


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ["symbol", "model_name", "token_kind", "region", "quote_currency", "status"]
    list_filter = ["status", "quote_currency", "token_kind", "region"]
    search_fields = ["symbol", "model_name", "base"]
