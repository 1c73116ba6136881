"""Signed identity claims: minted by the auth service after it checks an API key,
carried in one request header, verified by every service.

Token format: `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`, the MAC
over `v1.<claims>` with the secret shared by the services (VB_IDENTITY_SECRET).
Claims are short-lived: a leaked header is useless minutes later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from vocalbridge_common import scopes as scope_policy

DEFAULT_TTL_SECONDS = 300
_VERSION = "v1"
_MAX_VERIFIED = 10_000


class InvalidIdentity(Exception):
    """The identity header is missing, malformed, forged or expired."""


@dataclass(frozen=True)
class Identity:
    """Who a request acts for."""

    tenant_id: str  # empty for the operator and for service identities
    key_id: str
    scopes: frozenset[str]
    expires_at: int  # unix seconds

    def allows(self, full_method: str) -> bool:
        return scope_policy.allows(self.scopes, full_method)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class IdentitySigner:
    """Mints and verifies identity tokens with one shared secret."""

    def __init__(self, secret: bytes, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        if len(secret) < 32:
            raise ValueError("identity secret must be at least 32 bytes")
        self._secret = secret
        self._ttl = ttl_seconds
        # Tokens already verified (a caller's token repeats for every request within the
        # second it was minted in): checked once, then only for expiry. Bounded.
        self._verified: dict[str, Identity] = {}

    def _mac(self, signed_part: str) -> bytes:
        return hmac.new(self._secret, signed_part.encode(), hashlib.sha256).digest()

    def mint(self, tenant_id: str, key_id: str, scopes: Iterable[str], now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {"ten": tenant_id, "key": key_id, "scp": sorted(scopes), "iat": issued, "exp": issued + self._ttl}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signed_part = f"{_VERSION}.{body}"
        return f"{signed_part}.{_b64(self._mac(signed_part))}"

    def verify(self, token: str | None, now: float | None = None) -> Identity:
        if not token:
            raise InvalidIdentity("no identity")
        known = self._verified.get(token)
        if known is None:
            known = self._check(token)
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified[token] = known
        if known.expires_at <= int(now if now is not None else time.time()):
            raise InvalidIdentity("identity expired")
        return known

    def _check(self, token: str) -> Identity:
        """The claims of a well-formed token whose signature matches (expiry not checked)."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise InvalidIdentity("malformed identity")
        signed_part = f"{parts[0]}.{parts[1]}"
        try:
            mac = _unb64(parts[2])
        except ValueError:
            raise InvalidIdentity("malformed identity signature") from None
        if not hmac.compare_digest(mac, self._mac(signed_part)):
            raise InvalidIdentity("identity signature does not match")
        try:
            claims = json.loads(_unb64(parts[1]))
            identity = Identity(
                tenant_id=str(claims["ten"]),
                key_id=str(claims["key"]),
                scopes=frozenset(str(s) for s in claims["scp"]),
                expires_at=int(claims["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            raise InvalidIdentity("malformed identity claims") from None
        return identity
