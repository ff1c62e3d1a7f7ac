"""Error pages in every mode (`make run` is DEBUG=true), and what a refusal writes to the log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.http import HttpResponse, HttpResponseNotAllowed
from django.test import Client
from django.urls import reverse

from exchange.error_views import ErrorPagesMiddleware
from tests.orders.conftest import _fresh_inline_runner, market  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("market")]
ROOT = Path(__file__).resolve().parent.parent
API_NOT_FOUND = {"error": {"code": "not_found", "message": "Not found.", "details": {}}}


@pytest.mark.parametrize("debug", [True, False])
def test_unknown_market_gets_the_sites_404_page(client: Client, settings, debug) -> None:
    settings.DEBUG = debug
    response = client.get(reverse("web:trade", args=["NOPE"]))
    assert response.status_code == 404
    assert next(t.name for t in response.templates) == "404.html"
    body = response.content.decode()
    assert 'data-testid="not-found"' in body
    assert "Back to the markets" in body
    assert "Django" not in body  # not the debug page ("You're seeing this error because ...")


@pytest.mark.parametrize("debug", [True, False])
def test_unknown_api_url_answers_json_404(client: Client, settings, debug) -> None:
    settings.DEBUG = debug
    for path in ("/api/v1/no-such-thing", "/api", "/api/", "/api/v2/x"):
        response = client.get(path)
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == API_NOT_FOUND


@pytest.mark.parametrize("debug", [True, False])
def test_wrong_method_under_api_answers_json_405(client: Client, settings, debug) -> None:
    settings.DEBUG = debug
    response = client.delete("/api/v1/markets")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_plain_django_405_or_404_under_api_becomes_the_api_error_shape(rf) -> None:
    """Views under /api/ that are not DRF's (decorated functions, the resolver) answer HTML."""
    not_allowed = ErrorPagesMiddleware(lambda request: HttpResponseNotAllowed(["GET", "POST"]))
    response = not_allowed(rf.put("/api/v1/anything"))
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert response["Content-Type"] == "application/json"
    assert b'"code": "method_not_allowed"' in response.content
    # outside /api/ the answer is left alone
    page = HttpResponse("<h1>gone</h1>", status=404)
    assert ErrorPagesMiddleware(lambda request: page)(rf.get("/trade/X/")) is page


def test_buyer_on_the_provider_page_gets_403_and_no_traceback(make_user, caplog) -> None:
    buyer = make_user(role="buyer")
    client = Client()
    client.force_login(buyer)
    with caplog.at_level(logging.DEBUG):
        response = client.get(reverse("web:provider"))
    assert response.status_code == 403
    assert 'data-testid="forbidden"' in response.content.decode()
    assert [r for r in caplog.records if r.exc_info] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_unknown_page_logs_nothing_beyond_the_access_line(client: Client, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        assert client.get(reverse("web:trade", args=["NOPE"])).status_code == 404
    assert [r.getMessage() for r in caplog.records if r.name.startswith("django")] == []


def test_server_errors_keep_their_traceback(caplog, rf) -> None:
    from django.utils.log import log_response

    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        with caplog.at_level(logging.INFO):
            log_response("Internal Server Error: %s", "/x", response=HttpResponse(status=500),
                         request=rf.get("/x"), exception=error)  # fmt: skip
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert (record.levelname, record.exc_info is not None) == ("ERROR", True)


LOGGING_PROBE = """
import logging
import django
django.setup()
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.log import log_response

access = logging.getLogger("django.channels.server")
details = {"method": "GET", "path": "/x/", "status": 200, "time_taken": 0.01, "client": "c"}
access.info("HTTP %(method)s %(path)s %(status)s", details)
access.warning("HTTP %(method)s %(path)s %(status)s", {**details, "path": "/nope/", "status": 404})
request = RequestFactory().get("/provider/")
try:
    raise PermissionError("buyers may not")
except PermissionError as error:
    log_response("Forbidden (Permission denied): %s", request.path, request=request,
                 response=HttpResponse(status=403), exception=error)
"""


def test_each_request_is_logged_once_under_make_run_settings() -> None:
    """`make run`'s settings (DEBUG=true): Django's own console handler no longer doubles lines."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "exchange.settings", "DEBUG": "true"}
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO django.channels.server HTTP GET /x/ 200",
        "INFO django.channels.server HTTP GET /nope/ 404",
    ], result.stderr
