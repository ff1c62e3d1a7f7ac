from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

import accounts.funding.admin  # noqa: F401  (registers the funding models with the admin)
from accounts.funding.urls import web_urlpatterns as funding_pages
from accounts.funding.webhooks import stripe_webhook
from accounts.login_security import TwoFactorAdminSite
from exchange import views
from exchange.marketdata.api import asyncapi_document
from exchange.metrics import metrics_view

# The admin: staff verified by TOTP in this session, logging in through the site's throttled
# login (django-otp's documented swap, so every ModelAdmin registered on admin.site stays).
admin.site.__class__ = TwoFactorAdminSite

urlpatterns = [
    path("", views.home, name="home"),
    path("", include("exchange.web.urls")),
    path("", include("exchange.delivery.endpoints.web_urls")),
    path("healthz", views.healthz, name="healthz"),
    path("livez", views.livez, name="livez"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("exchange.markets.urls")),
    path("api/v1/", include("exchange.marketdata.urls")),
    path("api/v1/", include("accounts.api_urls")),
    path("api/v1/", include("exchange.ledger.urls")),
    path("api/v1/", include("orders.urls")),
    path("api/v1/", include("exchange.delivery.endpoints.urls")),
    path("api/v1/", include("exchange.delivery.gateway.urls")),
    path("api/v1/", include("accounts.funding.urls")),
    path("stripe/webhook", stripe_webhook, name="stripe-webhook"),
    path("funding/", include(funding_pages)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/asyncapi/", asyncapi_document, name="api-asyncapi"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]

handler404 = "exchange.error_views.not_found"
handler500 = "exchange.error_views.server_error"
