"""Funding URLs: ``urlpatterns`` for the API (under ``/api/v1/``), ``web_urlpatterns`` for pages."""

from django.urls import path

from accounts.funding import api, views

urlpatterns = [
    path("deposits", api.DepositListApi.as_view(), name="deposit-list"),
    path("withdrawals", api.WithdrawalListApi.as_view(), name="withdrawal-list"),
    path("payout-account", api.PayoutAccountApi.as_view(), name="payout-account"),
]

web_urlpatterns = (
    [
        path("deposits/", views.deposits, name="deposits"),
        path("demo-funds/", views.demo_funds, name="demo-funds"),
        path("payouts/", views.payouts, name="payouts"),
        path("payouts/connect/", views.connect, name="connect"),
        path("payouts/connect/return/", views.connect_return, name="connect_return"),
    ],
    "funding",
)
