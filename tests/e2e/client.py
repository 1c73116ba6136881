"""How the end-to-end tests act as API clients over JSON/HTTP."""

from __future__ import annotations

import httpx

# The stack under test caches API-key lookups this long (revocation takes effect after it).
KEY_CACHE_TTL_SECONDS = 1.0


class Tenant:
    """A tenant created through the API, with its admin key."""

    def __init__(self, http: httpx.AsyncClient, tenant: dict, key: dict) -> None:
        self.http = http
        self.name = tenant["name"]
        self.key = key["secret"]

    def headers(self, key: str | None = None, **extra) -> dict:
        return {"Authorization": f"Bearer {key or self.key}", **extra}

    async def get(self, path: str, **kwargs) -> httpx.Response:
        return await self.http.get(path, headers=self.headers(), **kwargs)

    async def post(self, path: str, body, **kwargs) -> httpx.Response:
        return await self.http.post(path, json=body, headers=self.headers(), **kwargs)

    async def patch(self, path: str, body, **kwargs) -> httpx.Response:
        return await self.http.patch(path, json=body, headers=self.headers(), **kwargs)

    async def delete(self, path: str, **kwargs) -> httpx.Response:
        return await self.http.delete(path, headers=self.headers(), **kwargs)

    async def create_key(self, scopes: list[str]) -> str:
        response = await self.post("/v1/apiKeys", {"displayName": "test", "scopes": scopes})
        assert response.status_code == 200, response.text
        return response.json()["secret"]


def error_reason(response: httpx.Response) -> str:
    """The ErrorInfo reason of a JSON google.rpc.Status error body."""
    body = response.json()
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail["reason"]
    raise AssertionError(f"no ErrorInfo in {body}")


def violated_fields(response: httpx.Response) -> set[str]:
    body = response.json()
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.BadRequest"):
            return {v["field"] for v in detail.get("fieldViolations", [])}
    return set()


def sse_events(response: httpx.Response) -> list[dict]:
    """The JSON payloads of a Server-Sent Events body (`data: {...}` lines)."""
    import json

    return [json.loads(line[len("data:") :]) for line in response.text.splitlines() if line.startswith("data:")]
