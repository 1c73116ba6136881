"""Agents over JSON/HTTP through Envoy: the DESIGN §3 flows, tenant isolation."""

from __future__ import annotations

import pytest

from tests.e2e.client import error_reason

SUPPORT = {
    "displayName": "Support",
    "systemPrompt": "You are helpful.",
    "primaryProvider": "vendorA",
    "fallbackProvider": "vendorB",
}


async def test_agent_lifecycle(new_tenant):
    tenant = await new_tenant("Lifecycle")
    created = await tenant.post("/v1/agents", SUPPORT)
    assert created.status_code == 200, created.text
    agent = created.json()
    assert agent["name"].startswith("agents/agt_")
    assert (agent["displayName"], agent["primaryProvider"], agent["fallbackProvider"], agent["version"]) == (
        "Support",
        "vendorA",
        "vendorB",
        1,
    )
    assert agent["etag"] and agent["createTime"] and agent["updateTime"]

    fetched = await tenant.get(f"/v1/{agent['name']}")
    assert fetched.status_code == 200 and fetched.json() == agent

    updated = await tenant.patch(
        f"/v1/{agent['name']}",
        {"systemPrompt": "You are terse.", "etag": agent["etag"]},
        params={"updateMask": "systemPrompt"},
    )
    assert updated.status_code == 200, updated.text
    assert (updated.json()["systemPrompt"], updated.json()["version"]) == ("You are terse.", 2)
    assert updated.json()["displayName"] == "Support"

    stale = await tenant.patch(
        f"/v1/{agent['name']}", {"displayName": "Old", "etag": agent["etag"]}, params={"updateMask": "displayName"}
    )
    assert stale.status_code == 409 and error_reason(stale) == "ETAG_MISMATCH"

    versions = await tenant.get(f"/v1/{agent['name']}/versions")
    assert versions.status_code == 200
    assert [(v["version"], v["systemPrompt"]) for v in versions.json()["agentVersions"]] == [
        (2, "You are terse."),
        (1, "You are helpful."),
    ]
    first = await tenant.get(f"/v1/{agent['name']}/versions/1")
    assert first.status_code == 200 and first.json()["systemPrompt"] == "You are helpful."

    deleted = await tenant.delete(f"/v1/{agent['name']}")
    assert deleted.status_code == 200 and deleted.json() == {}
    gone = await tenant.get(f"/v1/{agent['name']}")
    assert gone.status_code == 404 and error_reason(gone) == "AGENT_NOT_FOUND"
    listed = await tenant.get("/v1/agents")
    assert agent["name"] not in [a["name"] for a in listed.json().get("agents", [])]


async def test_list_paginates_with_opaque_tokens(new_tenant):
    tenant = await new_tenant("Pages")
    names = []
    for i in range(5):
        response = await tenant.post("/v1/agents", {**SUPPORT, "displayName": f"Agent {i}"})
        names.append(response.json()["name"])
    seen, token = [], ""
    while True:
        page = await tenant.get("/v1/agents", params={"pageSize": 2, **({"pageToken": token} if token else {})})
        assert page.status_code == 200
        seen += [a["name"] for a in page.json()["agents"]]
        token = page.json().get("nextPageToken", "")
        if not token:
            break
    assert seen == names
    bad = await tenant.get("/v1/agents", params={"pageToken": "bogus"})
    assert bad.status_code == 400 and error_reason(bad) == "INVALID_PAGE_TOKEN"


async def test_other_tenants_agents_do_not_exist(new_tenant):
    owner, other = await new_tenant("Owner"), await new_tenant("Other")
    agent = (await owner.post("/v1/agents", SUPPORT)).json()
    name = agent["name"]
    attempts = [
        await other.get(f"/v1/{name}"),
        await other.patch(f"/v1/{name}", {"displayName": "Hijacked"}, params={"updateMask": "displayName"}),
        await other.delete(f"/v1/{name}"),
        await other.get(f"/v1/{name}/versions"),
        await other.get(f"/v1/{name}/versions/1"),
    ]
    for response in attempts:
        assert response.status_code == 404, response.text
        assert error_reason(response) == "AGENT_NOT_FOUND"
    assert name not in [a["name"] for a in (await other.get("/v1/agents")).json().get("agents", [])]
    # ... and nothing changed for the owner.
    still = await owner.get(f"/v1/{name}")
    assert still.status_code == 200 and still.json()["displayName"] == "Support" and still.json()["version"] == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({**SUPPORT, "displayName": ""}, "agent.display_name"),
        ({**SUPPORT, "systemPrompt": "x" * 16001}, "agent.system_prompt"),
        ({**SUPPORT, "primaryProvider": "vendorZ"}, "agent.primary_provider"),
        ({**SUPPORT, "fallbackProvider": "vendorA"}, "agent.fallback_provider"),
        ({**SUPPORT, "parameters": {"temperature": 3}}, "agent.parameters.temperature"),
    ],
)
async def test_invalid_agents_are_refused_with_field_violations(new_tenant, body, field):
    from tests.e2e.client import violated_fields

    tenant = await new_tenant("Validation")
    response = await tenant.post("/v1/agents", body)
    assert response.status_code == 400, response.text
    assert field in violated_fields(response)
    assert (await tenant.get("/v1/agents")).json().get("agents", []) == []
