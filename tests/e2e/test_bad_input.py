"""Malformed requests get a clear JSON 4xx and change nothing."""

from __future__ import annotations

import pytest

from tests.e2e.client import error_reason, violated_fields


@pytest.mark.parametrize(
    "raw, why",
    [
        (b'{"displayName": "A", ', "malformed JSON"),
        (b'{"displayName": "A", "primaryProvider": "vendorA", "colour": "red"}', "unknown field"),
        (b'{"displayName": ["A"], "primaryProvider": "vendorA"}', "wrong type"),
        (
            b'{"displayName": "A", "primaryProvider": "vendorA", "parameters": {"maxOutputTokens": "lots"}}',
            "wrong type",
        ),
    ],
)
async def test_undecodable_bodies_are_400_and_write_nothing(new_tenant, http, raw, why):
    tenant = await new_tenant()
    response = await http.post(
        "/v1/agents", content=raw, headers=tenant.headers(**{"content-type": "application/json"})
    )
    assert response.status_code == 400, (why, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3
    assert violated_fields(response), why
    assert (await tenant.get("/v1/agents")).json().get("agents", []) == []


async def test_oversized_body_is_refused_and_writes_nothing(new_tenant, http):
    tenant = await new_tenant()
    huge = {"displayName": "Big", "primaryProvider": "vendorA", "systemPrompt": "x" * (2 * 1024 * 1024)}
    response = await http.post("/v1/agents", json=huge, headers=tenant.headers())
    assert response.status_code == 413, response.text
    assert error_reason(response) == "REQUEST_TOO_LARGE"
    assert violated_fields(response) == {"body"}
    assert (await tenant.get("/v1/agents")).json().get("agents", []) == []


async def test_unknown_query_parameter_and_unknown_path(new_tenant, http):
    tenant = await new_tenant()
    unknown_param = await tenant.get("/v1/agents", params={"colour": "red"})
    assert unknown_param.status_code == 400, unknown_param.text
    unknown_path = await tenant.get("/v1/nothing-here")
    assert unknown_path.status_code == 404
    assert unknown_path.headers["content-type"].startswith("application/json")
