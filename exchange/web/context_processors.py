"""What every page needs: the demo banner, the user's role and colour convention."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict[str, Any]:
    context: dict[str, Any] = {
        "demo": None,
        "is_provider": False,
        "is_buyer": False,
        # django-csp puts the nonce into the header only once it is read: read it lazily here.
        "csp_nonce": getattr(request, "csp_nonce", ""),
    }
    if settings.DEMO:
        from exchange.demo.seed import DEMO_LOGIN_EMAIL, DEMO_LOGIN_PASSWORD

        context["demo"] = {"email": DEMO_LOGIN_EMAIL, "password": DEMO_LOGIN_PASSWORD}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        profile = getattr(user, "profile", None)
        if profile is not None:
            context.update(
                is_provider=profile.is_provider,
                is_buyer=profile.is_buyer,
                color_up_red=profile.color_up_red,
            )
    else:
        # Visitors get the convention of their language: red for up in Chinese.
        context["color_up_red"] = getattr(request, "LANGUAGE_CODE", "en") == "zh-hans"
    return context
