"""Key rotation through the front door: the successor's secret shown once, both keys
working during the overlap, only the successor after it."""

from __future__ import annotations

import asyncio

from tests.e2e.client import KEY_CACHE_TTL_SECONDS, error_reason, violated_fields


async def test_a_rotated_key_works_with_its_successor_during_the_overlap_and_not_after(new_tenant):
    tenant = await new_tenant()
    created = await tenant.post("/v1/apiKeys", {"displayName": "deploy bot", "scopes": ["SCOPE_WRITE"]})
    old = created.json()
    rotated = await tenant.post(f"/v1/{old['name']}:rotate", {"overlap": "3s"})
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    new = body["apiKey"]
    assert new["secret"].startswith("vb_") and new["secret"] != old["secret"]
    assert (new["displayName"], new["scopes"]) == ("deploy bot", ["SCOPE_WRITE"])
    assert body["rotatedApiKey"]["successor"] == new["name"] and body["rotatedApiKey"]["expireTime"]
    # The secret is shown once: listing shows neither secret.
    listed = (await tenant.get("/v1/apiKeys")).json()["apiKeys"]
    assert all(not k.get("secret") for k in listed)
    for secret in (old["secret"], new["secret"]):
        assert (await tenant.http.get("/v1/me", headers=tenant.headers(secret))).status_code == 200
    await asyncio.sleep(3 + KEY_CACHE_TTL_SECONDS + 0.5)
    refused = await tenant.http.get("/v1/me", headers=tenant.headers(old["secret"]))
    assert refused.status_code == 401 and error_reason(refused) == "API_KEY_EXPIRED"
    me = await tenant.http.get("/v1/me", headers=tenant.headers(new["secret"]))
    assert me.status_code == 200 and me.json()["apiKey"] == new["name"]
    # Used keys show when they were last used (recorded in the background, a few seconds late).
    for _ in range(100):
        fetched = (await tenant.get(f"/v1/{new['name']}")).json()
        if fetched.get("lastUseTime"):
            break
        await asyncio.sleep(0.1)
    assert fetched.get("lastUseTime")


async def test_rotation_refuses_bad_input_and_other_tenants_keys(new_tenant):
    tenant, other = await new_tenant("Owner"), await new_tenant("Other")
    key = (await tenant.post("/v1/apiKeys", {"displayName": "k"})).json()
    bad = await tenant.post(f"/v1/{key['name']}:rotate", {"overlap": "-1s"})
    assert bad.status_code == 400 and violated_fields(bad) == {"overlap"}
    too_long = await tenant.post(f"/v1/{key['name']}:rotate", {"overlap": f"{31 * 86400}s"})
    assert too_long.status_code == 400 and violated_fields(too_long) == {"overlap"}
    stranger = await other.post(f"/v1/{key['name']}:rotate", {})
    assert stranger.status_code == 404 and error_reason(stranger) == "API_KEY_NOT_FOUND"
    reader = await tenant.create_key(["SCOPE_READ"])
    forbidden = await tenant.http.post(f"/v1/{key['name']}:rotate", json={}, headers=tenant.headers(reader))
    assert forbidden.status_code == 403
    # Unrotated through all that; rotating without an overlap keeps the old key for 24 hours.
    rotated = await tenant.post(f"/v1/{key['name']}:rotate", {})
    assert rotated.status_code == 200
    again = await tenant.post(f"/v1/{key['name']}:rotate", {})
    assert again.status_code == 400 and error_reason(again) == "API_KEY_ALREADY_ROTATED"
