"""The OpenAPI document (``/api/schema/``) describes the API completely: generated with
drf-spectacular's warnings as errors, every operation answers its errors with the one ``Error``
component, every JSON body is a named schema, and every request body refuses unknown fields."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("openapi") / "schema.yaml"
    # --fail-on-warn: any warning or error of the generator (an unguessable serializer, an enum
    # name collision, a free-form fallback) fails here, so CI fails on it
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield f"{method.upper()} {path}", operation


def test_every_operation_declares_its_errors_with_the_error_component(document) -> None:
    error = {"$ref": "#/components/schemas/Error"}
    for name, operation in operations(document):
        responses = operation["responses"]
        errors = {code: r for code, r in responses.items() if code[0] in "45"}
        assert "400" in errors, name  # any address may carry a control character
        for code, response in errors.items():
            assert response["content"]["application/json"]["schema"] == error, (name, code)
        security = operation.get("security", [])
        if any(scheme for scheme in security):  # credentials taken (optional when {} is listed)
            assert "401" in errors, name
        if {} not in security:
            assert "403" in errors, name
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            assert "404" in errors, name
        if "requestBody" in operation:
            assert "415" in errors, name


def test_every_json_body_is_a_named_schema(document) -> None:
    schemas = document["components"]["schemas"]
    for name, operation in operations(document):
        bodies = [
            (code, response["content"]["application/json"]["schema"])
            for code, response in operation["responses"].items()
            if code.startswith("2") and "application/json" in response.get("content", {})
        ]
        if "requestBody" in operation:
            bodies.append(
                ("request", operation["requestBody"]["content"]["application/json"]["schema"])
            )
        assert bodies or "csv" in name, name
        for code, schema in bodies:
            if schema.get("type") == "array":
                schema = schema["items"]
            assert set(schema) == {"$ref"}, (name, code, schema)
            component = schemas[schema["$ref"].rsplit("/", 1)[1]]
            assert component.get("properties"), (name, code)
            if code == "request":
                assert component["additionalProperties"] is False, (name, "unknown fields")


def test_lists_declare_their_paging(document) -> None:
    for path in ("/api/v1/orders", "/api/v1/fills", "/api/v1/ledger", "/api/v1/deposits",
                 "/api/v1/withdrawals", "/api/v1/generations", "/api/v1/audit-log",
                 "/api/v1/markets/{symbol}/trades", "/api/v1/markets/{symbol}/candles"):  # fmt: skip
        operation = document["paths"][path]["get"]
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert {"next", "previous", "results"} <= set(page["properties"]), path
        parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
        assert parameters["cursor"]["type"] == "string", path
        limit = parameters.get("limit") or parameters["page_size"]
        assert (limit["type"], limit["minimum"]) == ("integer", 1), path
        assert limit["maximum"] >= 100, path


def test_fixed_mismatches_of_issue_15(document) -> None:
    paths = document["paths"]
    revoke = paths["/api/v1/api-keys/{key_id}"]["delete"]["responses"]
    assert "204" not in revoke
    assert "200" in revoke
    statement = {p["name"]: p for p in paths["/api/v1/ledger/statement.csv"]["get"]["parameters"]}
    assert statement["start"]["required"]
    assert statement["end"]["required"]
    depth = next(p for p in paths["/api/v1/markets/{symbol}/book"]["get"]["parameters"]
                 if p["name"] == "depth")  # fmt: skip
    assert (depth["schema"]["minimum"], depth["schema"]["maximum"]) == (1, 100)
    allocations = paths["/api/v1/allocations"]["get"]["responses"]["200"]
    assert allocations["content"]["application/json"]["schema"]["type"] == "array"
    # capacity listings page like orders and fills (limit, cursor; #16 finding 4)
    capacity = paths["/api/v1/capacity"]["get"]
    assert {"limit", "cursor"} <= {p["name"] for p in capacity["parameters"]}
    page = capacity["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["$ref"].startswith("#/components/schemas/Paginated")
