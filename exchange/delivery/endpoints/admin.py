"""Admin: endpoints and their events, read-mostly. The upstream key's ciphertext is not a field
here (``editable=False`` and not listed), so no admin page shows or edits it."""

from __future__ import annotations

from django.contrib import admin

from exchange.delivery.endpoints.models import Endpoint, EndpointEvent


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["id", "provider", "market", "base_url", "model_id", "status", "last_checked_at"]
    list_filter = ["status", "market"]
    search_fields = ["provider__email", "base_url", "model_id"]
    fields = [
        "provider",
        "market",
        "base_url",
        "model_id",
        "concurrency_limit",
        "status",
        "last_checked_at",
        "last_success_at",
        "last_failure_at",
        "failing_since",
        "consecutive_failures",
        "last_error",
        "down_since",
    ]
    # Changing a URL or model id here would skip the check on save: providers do that through
    # the API or the dashboard. Staff can look, and delete.
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(EndpointEvent)
class EndpointEventAdmin(admin.ModelAdmin):
    list_display = ["id", "provider", "market", "kind", "created_at"]
    list_filter = ["kind"]
    readonly_fields = ["provider", "market", "endpoint", "kind", "message", "cancelled_order_ids"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
