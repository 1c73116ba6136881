"""The installed voices through the front door: GET /v1/voices lists them, and an agent's voice
is checked against them when the agent is created or updated (not only when a turn speaks)."""

from __future__ import annotations

from tests.e2e.client import error_reason, violated_fields

AGENT = {"displayName": "Talker", "primaryProvider": "vendorA"}


def _violation(response) -> str:
    for detail in response.json().get("details", []):
        if detail.get("@type", "").endswith("google.rpc.BadRequest"):
            return " ".join(v["description"] for v in detail["fieldViolations"])
    raise AssertionError(response.text)


async def _agent_names(tenant) -> list[str]:
    listed = await tenant.get("/v1/agents")
    assert listed.status_code == 200, listed.text
    return [agent["name"] for agent in listed.json().get("agents", [])]


async def test_the_installed_voices_are_listed_to_a_read_only_key(new_tenant, http):
    tenant = await new_tenant("Voices")
    read_only = await tenant.create_key(["SCOPE_READ"])
    listed = await http.get("/v1/voices", params={"pageSize": 1000}, headers=tenant.headers(read_only))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    voices = {voice["name"]: voice for voice in body["voices"]}
    engines = {voice["engine"] for voice in voices.values()}
    assert {"piper", "espeak"} <= engines
    assert "espeak/en-us" in voices and voices["espeak/en-us"]["language"] == "en-us"
    assert voices["espeak/en-us"]["variants"]  # eSpeak's variants (`+f3`, ...)
    assert all(name == f"{v['engine']}/{name.split('/', 1)[1]}" for name, v in voices.items())
    assert body["defaultVoice"] in voices
    assert body.get("nextPageToken", "") == ""  # every voice on one page of 1000

    # Paged like every list (eSpeak alone installs more than a default page of 50).
    names, token, pages = [], "", 0
    for _ in range(len(voices) + 1):
        pages += 1
        page = await http.get(
            "/v1/voices", params={"pageSize": 20, "pageToken": token}, headers=tenant.headers(read_only)
        )
        assert page.status_code == 200, page.text
        names += [voice["name"] for voice in page.json()["voices"]]
        token = page.json().get("nextPageToken", "")
        if not token:
            break
    assert names == [voice["name"] for voice in body["voices"]]
    assert pages == -(-len(voices) // 20)

    anonymous = await http.get("/v1/voices")
    assert anonymous.status_code == 401, anonymous.text


async def test_an_agent_voice_that_is_not_installed_is_refused_when_saved(new_tenant):
    tenant = await new_tenant("Voice checks")
    refused = await tenant.post("/v1/agents", {**AGENT, "voice": {"voice": "piper/en_GB-nobody-low"}})
    assert refused.status_code == 400, refused.text
    assert violated_fields(refused) == {"agent.voice.voice"}
    assert error_reason(refused) == "INVALID_ARGUMENT"
    assert "not installed" in _violation(refused) and "espeak/" in _violation(refused)
    assert await _agent_names(tenant) == []  # nothing written

    created = await tenant.post("/v1/agents", {**AGENT, "voice": {"voice": "espeak/en-us+f3", "wordsPerMinute": 200}})
    assert created.status_code == 200, created.text
    agent = created.json()
    assert await _agent_names(tenant) == [agent["name"]]

    bad_update = await tenant.patch(
        f"/v1/{agent['name']}", {"voice": {"voice": "espeak/klingon"}}, params={"updateMask": "voice.voice"}
    )
    assert bad_update.status_code == 400, bad_update.text
    assert violated_fields(bad_update) == {"agent.voice.voice"}
    unchanged = await tenant.get(f"/v1/{agent['name']}")
    assert unchanged.json() == agent  # no new version

    bad_rate = await tenant.patch(
        f"/v1/{agent['name']}", {"voice": {"wordsPerMinute": 900}}, params={"updateMask": "voice.wordsPerMinute"}
    )
    assert bad_rate.status_code == 400, bad_rate.text
    assert violated_fields(bad_rate) == {"agent.voice.words_per_minute"}

    default_voice = (await tenant.get("/v1/voices")).json()["defaultVoice"]
    updated = await tenant.patch(
        f"/v1/{agent['name']}", {"voice": {"voice": default_voice}}, params={"updateMask": "voice.voice"}
    )
    assert updated.status_code == 200, updated.text
    assert (updated.json()["version"], updated.json()["voice"]) == (2, {"voice": default_voice, "wordsPerMinute": 200})
