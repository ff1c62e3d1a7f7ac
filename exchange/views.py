"""Site-wide pages: the home page (markets overview), readiness and liveness."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from exchange.health import health_report
from exchange.markets.selectors import market_list


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "exchange/home.html", {"markets": market_list()})


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Readiness, for the load balancer: 200 when every dependency answers and the runner keeps
    up, else 503 (``exchange.health``). Each dependency's result is in the body."""
    ready, report = health_report()
    return JsonResponse(report, status=200 if ready else 503)


@never_cache
def livez(request: HttpRequest) -> JsonResponse:
    """Liveness, for the process supervisor: the process answers HTTP. Touches no dependency, so
    an outage of PostgreSQL or Redis never gets healthy processes restarted."""
    return JsonResponse({"status": "ok"})
