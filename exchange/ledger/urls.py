from django.urls import path

from exchange.ledger import api

urlpatterns = [
    path("balances", api.BalanceListApi.as_view(), name="ledger-balances"),
    path("ledger", api.LedgerListApi.as_view(), name="ledger-postings"),
    path("ledger/statement.csv", api.StatementCsvApi.as_view(), name="ledger-statement"),
]
