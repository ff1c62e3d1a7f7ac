from django.urls import path

from exchange.delivery.endpoints import api

urlpatterns = [
    path("provider/endpoints", api.EndpointListApi.as_view(), name="provider-endpoints"),
    path(
        "provider/endpoints/events",
        api.EndpointEventListApi.as_view(),
        name="provider-endpoint-events",
    ),
    path(
        "provider/endpoints/<int:endpoint_id>",
        api.EndpointDetailApi.as_view(),
        name="provider-endpoint",
    ),
    path(
        "markets/<str:symbol>/providers",
        api.MarketProvidersApi.as_view(),
        name="market-providers",
    ),
]
