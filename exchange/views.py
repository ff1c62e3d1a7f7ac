"""Site-wide pages: the home page (markets overview) and health check."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from exchange.markets.selectors import market_list


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "exchange/home.html", {"markets": market_list()})


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
