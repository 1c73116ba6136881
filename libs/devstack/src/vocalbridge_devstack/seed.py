"""Seeds the demo tenant through the front door, as a client would: a tenant
created with the operator key, then two agents created with the tenant's key."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEMO_AGENTS = (
    {
        "displayName": "Support",
        "systemPrompt": "You are a concise, friendly support agent for VocalBridge.",
        "primaryProvider": "vendorA",
        "fallbackProvider": "vendorB",
        "parameters": {"temperature": 0.3, "maxOutputTokens": 256},
    },
    {
        "displayName": "Concierge",
        "systemPrompt": "You are a warm concierge who answers in two sentences at most.",
        "primaryProvider": "vendorB",
        "fallbackProvider": "vendorA",
        "voice": {"voice": "en-us", "wordsPerMinute": 170},
    },
)


def http_json(
    base_url: str, method: str, path: str, key: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"body": raw.decode(errors="replace")}


def seed_demo_tenant(base_url: str, operator_key: str, data_dir: Path) -> str:
    """Returns the demo tenant's API key, creating the tenant and agents on first run."""
    key_file = data_dir / "demo-api-key"
    if key_file.exists():
        key = key_file.read_text().strip()
        status, _ = http_json(base_url, "GET", "/v1/me", key)
        if status == 200:
            return key
    status, created = http_json(base_url, "POST", "/v1/tenants", operator_key, {"displayName": "Demo"})
    if status != 200:
        raise RuntimeError(f"seeding the demo tenant failed: HTTP {status} {created}")
    key = str(created["apiKey"]["secret"])
    for agent in DEMO_AGENTS:
        status, body = http_json(base_url, "POST", "/v1/agents", key, agent)
        if status != 200:
            raise RuntimeError(f"seeding agent {agent['displayName']} failed: HTTP {status} {body}")
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key
