from django.urls import path

from exchange.web import views

app_name = "web"

urlpatterns = [
    path("markets/", views.markets, name="markets"),
    path("trade/<str:symbol>/", views.trade, name="trade"),
    path("trade/<str:symbol>/order/", views.order_create, name="order_create"),
    path("trade/<str:symbol>/orders/", views.orders_panel, name="orders"),
    path("trade/<str:symbol>/balances/", views.balances_panel, name="balances"),
    path("trade/<str:symbol>/cancel-all/", views.order_cancel_all_view, name="order_cancel_all"),
    path("orders/<int:order_id>/cancel/", views.order_cancel_view, name="order_cancel"),
    path("provider/", views.provider, name="provider"),
    path("portfolio/", views.portfolio, name="portfolio"),
    path("use/", views.use, name="use"),
]
