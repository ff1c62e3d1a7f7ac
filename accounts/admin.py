from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from accounts.models import ApiKey, Profile, ProviderApplication, User
from accounts.onboarding import provider_application_decide
from exchange.errors import ExchangeError


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    # The provider role is given by deciding an application (ProviderApplicationAdmin).
    readonly_fields = ["role"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined"]
    search_fields = ["email"]
    inlines = [ProfileInline]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    filter_horizontal = ["groups", "user_permissions"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "scopes", "created_at", "expires_at", "revoked_at"]
    readonly_fields = ["prefix", "hashed_key", "created_at", "last_used_at"]
    search_fields = ["prefix", "user__email", "name"]


class DecisionForm(forms.Form):
    reason = forms.CharField(
        label="Reason (shown to the applicant)", widget=forms.Textarea, max_length=2000
    )


@admin.register(ProviderApplication)
class ProviderApplicationAdmin(admin.ModelAdmin):
    """Staff decide applications with the two actions (each asks for the reason first)."""

    list_display = ["id", "user", "role", "status", "created_at", "decided_at", "decided_by"]
    list_filter = ["status", "role"]
    search_fields = ["user__email"]
    readonly_fields = [
        "user", "role", "message", "status", "created_at", "decided_at", "decided_by", "reason",
    ]  # fmt: skip
    actions = ["approve", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users apply; operators use create_user --role provider

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the record of who decided what stays

    @admin.action(description="Approve the selected applications")
    def approve(self, request: HttpRequest, queryset: QuerySet[ProviderApplication]) -> Any:
        return self._decide(request, queryset, approve=True)

    @admin.action(description="Reject the selected applications (or withdraw an approval)")
    def reject(self, request: HttpRequest, queryset: QuerySet[ProviderApplication]) -> Any:
        return self._decide(request, queryset, approve=False)

    def _decide(
        self, request: HttpRequest, queryset: QuerySet[ProviderApplication], *, approve: bool
    ) -> TemplateResponse | None:
        form = DecisionForm(request.POST if "decide" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "admin/accounts/providerapplication/decide.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Approve" if approve else "Reject",
                    "form": form,
                    "applications": list(queryset),
                    "action": request.POST.get("action", ""),
                    "opts": self.model._meta,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        done = 0
        for application in queryset.order_by("id"):
            try:
                provider_application_decide(
                    application_id=application.id,
                    staff_user=request.user,  # type: ignore[arg-type]
                    approve=approve,
                    reason=form.cleaned_data["reason"],
                )
            except ExchangeError as error:
                self.message_user(
                    request, f"Application {application.id}: {error.message}", messages.ERROR
                )
            else:
                done += 1
        verb = "approved" if approve else "rejected"
        self.message_user(request, f"{done} application(s) {verb}.", messages.SUCCESS)
        return None
