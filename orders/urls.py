from django.urls import path

from orders import api

urlpatterns = [
    path("orders", api.OrderListApi.as_view(), name="order-list"),
    path("orders/batch", api.OrderBatchApi.as_view(), name="order-batch"),
    path("orders/<int:order_id>", api.OrderDetailApi.as_view(), name="order-detail"),
    path(
        "orders/by-client-id/<str:client_order_id>",
        api.OrderByClientIdApi.as_view(),
        name="order-by-client-id",
    ),
    path("fills", api.FillListApi.as_view(), name="fill-list"),
    path("capacity", api.CapacityApi.as_view(), name="capacity"),
    path("allocations", api.AllocationListApi.as_view(), name="allocations"),
]
